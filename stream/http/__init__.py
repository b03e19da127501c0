"""HTTP: what the monitor answers on its port.

The aiohttp server with a production server's limits, the stream API (`/api/v1/streams`), the
media-server publish hooks, the source catalogue those share, and access rules for tokens. It sits on
the live loop: it may import the stream root, `stream.ingest`, `stream.live` and `stream.ops`; never
`stream.scale`.
"""
