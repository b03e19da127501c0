"""Pull through ffmpeg (RTSP, SRT, HLS over HTTP(S), UDP, TCP): anything ffmpeg opens; reconnects when it drops."""

from stream.sources.base import SourceType

SOURCE = SourceType(kind="pull", schemes=("rtsp", "rtsps", "srt", "http", "https", "udp", "tcp"),
                    scheme_options={"rtsp": {"rtsp_transport": "tcp"}})
