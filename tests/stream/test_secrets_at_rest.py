"""No secret at rest: `fvq serve` with workers passes its config (tokens, the webhook's password) to them over a
pipe, writes no file holding one, and leaves no fvq-* folder behind after SIGTERM or after kill -9 of the front."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.stream.test_workers import Served
from tests.stream.test_workers import small_clip as small_clip  # noqa: F401 - the fixture

SECRETS = ("api-s3cret-token-123", "whip-s3cret-token-456", "hook-pass-789")


def _leftovers(tmp: Path) -> list[str]:
    return sorted(p.name for p in tmp.iterdir() if p.name.startswith("fvq-"))


def _files_with_secrets(tmp: Path) -> list[str]:
    found = []
    for path in tmp.rglob("*"):
        try:
            text = path.read_bytes() if path.is_file() else b""
        except OSError:
            continue
        found += [f"{path}: {s}" for s in SECRETS if s.encode() in text]
    return found


@pytest.mark.parametrize("how", ["sigterm", "kill9"])
def test_no_secret_on_disk_and_no_folder_left(tmp_path: Path, small_clip: Path, how: str,  # noqa: F811
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    config = {
        "window": {"length_s": 1.0, "hop_s": 0.5}, "no_model": True, "workers": 2, "worker_spares": 1,
        "server": {"api_token": SECRETS[0], "whip_token": SECRETS[1]},
        "alerts": {"webhook_url": f"http://alerts:{SECRETS[2]}@127.0.0.1:9/hook"},
        "sources": [{"name": "a", "url": str(small_clip), "loop": True},
                    {"name": "live", "url": f"rtmp://127.0.0.1:{free_port()}/live", "listen": True}],
    }
    served = Served(tmp_path, config)
    try:
        served.wait(lambda: served.get("/healthz")[0] == 200, "the front to be ready", 120)
        served.wait(lambda: len(served.worker_pids()) >= 3, "two workers and the spare", 120)
        assert _leftovers(tmp) and all(n.startswith("fvq-rtmp-") for n in _leftovers(tmp)), _leftovers(tmp)
        assert not _files_with_secrets(tmp), _files_with_secrets(tmp)
        if how == "sigterm":
            served.proc.send_signal(signal.SIGTERM)
        else:
            os.kill(served.proc.pid, signal.SIGKILL)  # the front only: its workers, nginx and reaper are on their own
        served.proc.wait(30)
        deadline = time.monotonic() + 20
        while _leftovers(tmp) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _leftovers(tmp), _leftovers(tmp)
    finally:
        served.stop()
