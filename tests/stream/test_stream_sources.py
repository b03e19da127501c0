"""Source fields of streams that come and go: RTMP listen kinds, labels, listen-only options, hook templates."""

from __future__ import annotations

import pytest

from stream.config import ConfigError, SourceConfig, SourceKind, load_config
from stream.http.hooks import map_publish
from stream.ingest.rtmp import RtmpListenError, key_stream_name, listen_address, publish_token


def test_listen_kinds_from_the_url():
    assert SourceConfig(name="a", url="rtmp://0.0.0.0:1935/live", listen=True).kind == SourceKind.rtmp_server
    assert SourceConfig(name="a", url="rtmp://0.0.0.0:1935/live/cam", listen=True).kind == SourceKind.rtmp_listen
    assert SourceConfig(name="a", url="rtmp://host/live/cam").kind == SourceKind.rtmp_pull
    assert listen_address("rtmp://0.0.0.0:1936/live") == ("0.0.0.0", 1936, "live", None)
    assert listen_address("rtmp://[::]/live/k") == ("::", 1935, "live", "k")
    with pytest.raises(RtmpListenError, match="rtmp://HOST:PORT/APP"):
        listen_address("rtmp://h:1/a/b/c")


@pytest.mark.parametrize("labels, message", [
    ({"0channel": "x"}, "invalid"), ({"chan-nel": "x"}, "invalid"), ({"__name": "x"}, "__"),
    ({"stream": "x"}, "reserved"), ({"instance": "x"}, "reserved"), ({"le": "x"}, "reserved"),
    ({f"l{i}": "x" for i in range(17)}, "at most 16"), ({"channel": "x" * 257}, "256"),
])
def test_label_names_follow_prometheus_rules(labels, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        SourceConfig(name="a", url="x.mp4", labels=labels)
    conf = tmp_path / "c.yaml"
    conf.write_text(f"sources: [{{name: a, url: x.mp4, labels: {labels!r}}}]".replace("'", '"'))
    with pytest.raises(ConfigError, match=r"sources\.0\.labels"):
        load_config(conf)


def test_good_labels_and_listen_only_options():
    s = SourceConfig(name="a", url="x.mp4", labels={"channel": "news", "region": "eu", "_x": ""})
    assert s.labels["region"] == "eu"
    with pytest.raises(ValueError, match="allow_keys is for RTMP listen"):
        SourceConfig(name="a", url="rtmp://h/live/cam", listen=True, allow_keys=["cam-*"])
    with pytest.raises(ValueError, match="publish_tokens is for RTMP listen"):
        SourceConfig(name="a", url="rtsp://h/x", publish_tokens={"*": "t"})
    SourceConfig(name="a", url="rtmp://h/live/cam", listen=True, publish_tokens={"cam": "t"})


def test_publish_tokens_and_key_names():
    assert publish_token({"name": "cam", "token": "a"}) == "a"  # nginx passes the key's query as fields
    assert publish_token({"name": "cam?token=b"}) == "b"
    assert publish_token({"name": "cam", "tcurl": "rtmp://h/live?token=c"}) == "c"
    assert publish_token({"name": "cam"}) is None
    assert key_stream_name("cam 1/ä") == "cam_1__"
    assert key_stream_name("..") == "stream"


def test_hook_templates_are_checked_and_applied(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text("hooks: {pull_url: 'rtmp://x/{app}/{stream}'}")
    with pytest.raises(ConfigError, match=r"hooks\.pull_url.*unknown field \{stream\}"):
        load_config(conf)
    conf.write_text("hooks: {labels: {channel: '{name'}}")
    with pytest.raises(ConfigError, match=r"hooks\.labels"):
        load_config(conf)
    conf.write_text("hooks: {pull_url: 'rtmp://10.0.0.2/{app}/{name}', stream_name: '{vhost}.{name}', "
                    "labels: {channel: '{name}'}, apps: [live]}")
    hooks = load_config(conf).hooks
    s = map_publish(hooks, {"app": "live", "name": "cam/1", "vhost": "v"})
    assert (s.name, s.url, s.labels, s.kind) == ("v.cam_1", "rtmp://10.0.0.2/live/cam/1", {"channel": "cam/1"},
                                                  SourceKind.rtmp_pull)
    assert map_publish(hooks, {"app": "other", "name": "cam"}) is None  # not a followed app
    with pytest.raises(ValueError, match="names no app"):
        map_publish(hooks, {"app": "live"})
