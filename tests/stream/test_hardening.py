"""What used to crash or hang now fails with a clear error and a non-zero exit: too many sources, a port in use,
hostile bundle manifests, FIFOs given to `fvq score`; short windows are flagged; failing files back off."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engines.bundle import BundleError, file_entry, verify_bundle
from stream.config import AnalysisConfig, SourceConfig
from stream.ingest.decode import SourceEvents, SourceReader
from stream.ingest.queues import FrameQueue
from tests.conftest import free_port, make_face_clip


def fvq(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fvq", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_more_sources_than_max_streams_fails_validation_naming_both(tmp_path: Path) -> None:
    cfg = tmp_path / "many.yaml"
    cfg.write_text("limits: {max_streams: 2}\nsources:\n"
                   + "".join(f"  - {{name: s{i}, url: /nonexistent/{i}.mp4}}\n" for i in range(5)))
    out = fvq("serve", "--config", str(cfg), "--no-model", "--duration", "1")
    assert out.returncode == 2, out.stderr
    assert "5 streams" in out.stderr and "limits.max_streams is 2" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_port_in_use_is_named_without_a_traceback() -> None:
    port = free_port()
    with socket.socket() as held:
        held.bind(("127.0.0.1", port))
        held.listen()
        out = fvq("serve", "--no-model", "--port", str(port), "--duration", "1")
    assert out.returncode == 2, out.stderr
    assert f"cannot listen on http://127.0.0.1:{port}" in out.stderr and "in use" in out.stderr
    assert "Traceback" not in out.stderr


def bundle(tmp_path: Path, name: str, manifest: dict | str, files: dict[str, bytes] | None = None) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for fname, data in (files or {}).items():
        (folder / fname).write_bytes(data)
    (folder / "manifest.json").write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))
    return folder


def test_hostile_bundle_manifests_are_refused_by_name(tmp_path: Path) -> None:
    deep = bundle(tmp_path, "deep", '{"format_version": 2, "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(BundleError, match="nested deeper"):
        verify_bundle(deep)
    string_entry = bundle(tmp_path, "string", {"format_version": 2, "files": {"a.onnx": "deadbeef"}},
                          {"a.onnx": b"x"})
    with pytest.raises(BundleError, match=r"files\['a.onnx'\] must be an object"):
        verify_bundle(string_entry)
    outside = tmp_path / "secret.bin"
    outside.write_bytes(b"not yours")
    link = bundle(tmp_path, "link", {"format_version": 2, "files": {"model.onnx": file_entry(outside)}})
    (link / "model.onnx").symlink_to(outside)
    with pytest.raises(BundleError, match="outside the bundle"):
        verify_bundle(link)
    big = bundle(tmp_path, "big", '{"format_version": 2, "pad": "' + "x" * (2 << 20) + '"}')
    with pytest.raises(BundleError, match="more than a manifest may"):
        verify_bundle(big)
    bad_precisions = bundle(tmp_path, "prec", {"format_version": 2, "files": {"a": file_entry(outside)},
                                               "precisions": {"fp32": "a"}}, {"a": b"not yours"})
    with pytest.raises(BundleError, match="precisions"):
        verify_bundle(bad_precisions)
    # and through the CLI: exit 2 and one line, no traceback
    out = fvq("score", "--bundle", str(deep), str(outside))
    assert out.returncode == 2 and "refusing the model bundle" in out.stderr and "Traceback" not in out.stderr


def test_score_refuses_a_fifo_instead_of_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    out = fvq("score", "--json", "--no-model", str(fifo), "/dev/zero", timeout=60)
    assert out.returncode == 1
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert all("not a regular file" in line["error"] for line in lines), lines
    assert len(lines) == 2 and time.monotonic() - t0 < 60


def test_windows_shorter_than_the_window_length_are_flagged_partial(media_dir: Path) -> None:
    short = make_face_clip(media_dir / "short_0.6s.mp4", seconds=0.6, size="320x240")
    out = fvq("score", "--json", "--no-model", str(short))
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["partial"] is True and report["windows"][0]["partial"] is True
    assert any("shorter than the 4 s window length" in w for w in report["warnings"])
    full = make_face_clip(media_dir / "full_5s.mp4", seconds=5, size="320x240")
    report = json.loads(fvq("score", "--json", "--no-model", str(full)).stdout)
    assert "partial" not in report and all("partial" not in w for w in report["windows"])


class Recorder(SourceEvents):
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.delays: list[float] = []

    def error(self, kind: str, message: str) -> None:
        self.errors.append(message)

    def reconnecting(self, delay: float) -> None:
        self.delays.append(delay)


def test_a_looped_file_that_fails_to_reopen_backs_off(tmp_path: Path) -> None:
    source = SourceConfig(name="gone", url=str(tmp_path / "removed.mp4"), loop=True)
    events = Recorder()
    reader = SourceReader(source, AnalysisConfig(), FrameQueue(8, source.drop_policy), events, backoff=(0.2, 1.0))
    reader.start()
    time.sleep(2.0)
    reader.stop()
    reader.join(5)
    # 0.2 + 0.4 + 0.8 + 1.0 s: a handful of attempts in 2 s, not thousands
    assert 2 <= len(events.errors) <= 6, len(events.errors)
    assert events.delays[:3] == [0.2, 0.4, 0.8]


def test_serve_says_at_start_up_who_may_publish() -> None:
    from stream.cli import ingest_notice
    from stream.config import MonitorConfig

    default = ingest_notice(MonitorConfig())
    assert "loopback clients only" in default and "CORS origins: none" in default
    assert "public addresses only" in default
    open_ = ingest_notice(MonitorConfig.model_validate({"server": {"allow_anonymous_ingest": True}}))
    assert "OPEN to anyone" in open_
