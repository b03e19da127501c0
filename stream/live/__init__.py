"""The live loop: from decoded frames to a published verdict per stream.

Window assembly by presentation time, the analysis and scoring of each window, per-stream state, load
shedding when the loop falls behind, the memory bounds, the `Monitor` that owns every stream, and the
offline path (`fvq score`) that runs the same steps over files. It may import the stream root,
`stream.ingest` and `stream.ops`; never HTTP or scale-out.
"""
