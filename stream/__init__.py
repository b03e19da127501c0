"""Everything live, in rooms by job: ingest/ (sources to decoded frames), live/ (windows, analysis, the monitor),
http/ (server, stream API, hooks), scale/ (front, workers, Ray), ops/ (metrics, alert rules, recommendations,
webhook). At this root: the one configuration model (config.py), the source-type registry (sources/), secret
redaction and stream admission, which every room may import."""

__version__ = "0.1.0"
