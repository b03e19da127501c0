"""Everything live: sources, decode, bounded queues, sliding windows, the scoring loop, metrics, HTTP, CLI."""

__version__ = "0.1.0"
