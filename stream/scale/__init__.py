"""Scale-out: one front, many workers, and the same workers as Ray actors on a cluster.

The front process that serves the HTTP of every worker (merged metrics, routed WHIP, the stream API),
the worker processes that own shards of the streams, the Ray cluster mode and the Ray Serve rater. It is
the top room of `stream/`: it may import every other one.
"""
