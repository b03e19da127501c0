"""The source registry: one module per kind, inference by URL, and the facts the decoder and monitor read."""

from __future__ import annotations

import pytest

from stream.config import SourceConfig
from stream.sources import KINDS, SourceKind, infer_kind, register_source, source_type
from stream.sources.base import SourceType


@pytest.mark.parametrize(("url", "listen", "kind"), [
    ("clip.mp4", False, "file"),
    ("file:///tmp/clip.mp4", False, "file"),
    ("rtmp://h/live/key", False, "rtmp_pull"),
    ("rtmps://h/live/key", False, "rtmp_pull"),
    ("rtmp://h:1936/live/key", True, "rtmp_listen"),
    ("rtmp://h:1936/live", True, "rtmp_server"),  # an app without a key: a stream per published key
    ("rtmps://h:1936/live", True, "rtmp_listen"),  # only plain rtmp:// takes many publishers
    ("rtsp://h/cam", False, "pull"),
    ("srt://h:9000", False, "pull"),
    ("https://h/live.m3u8", False, "pull"),
])
def test_kind_inferred_from_the_url(url, listen, kind):
    assert infer_kind(url, listen) == SourceKind(kind)


def test_whip_is_never_inferred_and_bad_urls_are_refused_by_scheme():
    with pytest.raises(ValueError, match="unsupported URL scheme 'whip'"):
        infer_kind("whip:cam")
    with pytest.raises(ValueError, match="unsupported URL scheme 'ftp'"):
        infer_kind("ftp://h/x.mp4")
    with pytest.raises(ValueError, match="`listen` is for rtmp:// URLs only"):
        infer_kind("rtsp://h/cam", listen=True)


def test_each_kind_is_a_module_and_the_enum_follows_the_registry():
    assert [k.value for k in SourceKind] == list(KINDS)
    for kind in KINDS:
        assert source_type(kind).kind == kind
    with pytest.raises(ValueError, match="already registered"):
        register_source(SourceType(kind="file"))
    with pytest.raises(ValueError, match="valid kinds: file, rtmp_pull"):
        source_type("ndi")


def test_facts_the_decoder_and_monitor_read():
    file, listen, server, pull = (source_type(k) for k in ("file", "rtmp_listen", "rtmp_server", "pull"))
    assert file.ends and file.open_timeout is None and not pull.ends
    assert listen.waits_for_publisher and listen.rtmp_listener and not listen.stream_per_key
    assert server.stream_per_key and server.takes_allow_keys and not listen.takes_allow_keys
    assert source_type("whip").pushed and not pull.pushed
    assert pull.input_options("rtsp://h/cam") == {"rtsp_transport": "tcp"}
    assert pull.input_options("srt://h:1") == {}
    # files wait for room in the queue; live sources drop the oldest frame
    assert SourceConfig(name="f", url="a.mp4").drop_policy == "wait"
    assert SourceConfig(name="p", url="rtsp://h/cam").drop_policy == "drop_oldest"
    with pytest.raises(ValueError, match="allow_keys is for RTMP listen sources"):
        SourceConfig(name="k", url="rtmp://h/live/key", listen=True, allow_keys=["a*"])


@pytest.mark.parametrize(("url", "message"), [
    ("", "the URL is empty"),
    ("   ", "the URL is empty"),
    ("clip\x00.mp4", "control character"),
    ("rtsp://h/cam\nX-Injected: 1", "control character"),
    ("rtmp:///live/key", "names no host"),
    ("rtmp://127.0.0.1:99999/live/key", "bad address"),
    ("srt://::::", "bad address"),
    ("/" + "x" * 5000, "at most 4096"),
])
def test_a_url_no_reader_could_open_is_refused_when_added(url, message):
    with pytest.raises(ValueError, match=message):
        SourceConfig(name="cam", url=url)


def test_a_folder_is_refused_and_what_may_appear_later_is_the_readers(tmp_path):
    with pytest.raises(ValueError, match="is a folder"):
        SourceConfig(name="cam", url=str(tmp_path))
    # a file that is not there yet, a server that is down now: the stream reads `error` and retries
    assert SourceConfig(name="cam", url=str(tmp_path / "later.mp4")).kind == SourceKind.file
    assert SourceConfig(name="cam", url="rtsp://user:pw@127.0.0.1:1/x").kind == SourceKind.pull
    assert SourceConfig(name="cam", url="srt://[::1]:9000").kind == SourceKind.pull
