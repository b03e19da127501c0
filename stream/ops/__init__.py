"""Operations: what the monitor tells the people and systems that watch it.

Prometheus metrics, the generated alert rules, recommendations (a cause and its action), the
Alertmanager-style webhook, the terminal table and log filters. It may import only the stream root
(config, redaction) and `engines`; the live loop reaches it, never the other way (monitor types only).
"""
