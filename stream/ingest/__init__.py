"""Ingest: everything that turns a source into decoded frames on a bounded queue.

Decoding threads (PyAV), the RTMP listener (a bundled nginx-rtmp) and its many-key apps, the WHIP/WebRTC
peer, the ffmpeg relay for protocols PyAV cannot pull, and the frame queues with their drop policies. It
may import the stream root (config, the source-type registry, redaction, admission) and `stream.ops`
(metrics); never the live loop, HTTP or scale-out (the monitor reaches it only as a type).
"""
