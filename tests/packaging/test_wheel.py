"""The wheel as a user installs it: built from this checkout, installed with no extras into a fresh virtual
environment, it scores and serves from a folder outside the checkout without torch, on the bundle inside the
package; the commands that need an extra say which one in one line.

Slow (it builds the wheel and installs its dependencies from the package index, through pip's cache): about a
minute with a warm cache, two or three the first time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from engines.bundle import read_manifest, save_manifest, shipped_bundle

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("fvq", "stream", "engines", "export", "train")
TRAINING_STACK = ("torch", "transformers", "peft", "onnxscript", "scipy", "sklearn", "ray", "tensorrt")
WINDOWS = re.compile(r"^fvq_windows_analysed_total\{[^}]*\} ([0-9.e+]+)$", re.M)


def _env(**extra: str) -> dict[str, str]:
    """This environment without PYTHONPATH: the installed package must not read the checkout."""
    return {**{k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FVQ_BUNDLE")}, **extra}


@pytest.fixture(scope="module")
def base_install(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("wheel")
    # the packaged files, copied: setuptools writes build/ and *.egg-info next to the sources it builds
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp / "dist"), str(src)],
                   check=True, timeout=600, env=_env())
    (wheel,) = (tmp / "dist").glob("fvq_live-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)], check=True,
                   timeout=900, env=_env())
    work = tmp / "elsewhere"  # a folder outside the checkout, as a user's would be
    work.mkdir()
    shutil.copy(ROOT / "samples" / "clean.mp4", work / "clean.mp4")
    return {"venv": venv, "work": work, "cache": tmp / "cache", "tmp": tmp}


def _fvq(install: dict[str, Path], *argv: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(install["venv"] / "bin" / "fvq"), *argv], cwd=install["work"], capture_output=True,
                          text=True, timeout=timeout, env=_env(FVQ_CACHE_DIR=str(install["cache"]), **env))


def test_the_base_install_has_no_training_stack_and_finds_its_bundle_inside_the_package(base_install):
    py = str(base_install["venv"] / "bin" / "python")
    probe = ("import importlib.util, json; from engines.bundle import default_bundle, verify_bundle; "
             f"b = default_bundle(); verify_bundle(b); print(json.dumps([str(b), [m for m in {TRAINING_STACK!r} "
             "if importlib.util.find_spec(m)]]))")
    out = subprocess.run([py, "-c", probe], cwd=base_install["work"], capture_output=True, text=True, timeout=120,
                         env=_env())
    assert out.returncode == 0, out.stderr
    bundle, present = json.loads(out.stdout)
    assert present == [], f"the base install brought {present}"
    assert Path(bundle).is_relative_to(base_install["venv"]) and not Path(bundle).is_relative_to(ROOT)


def test_scores_a_sample_from_outside_the_checkout_as_the_full_install_does(base_install):
    base = _fvq(base_install, "score", "--json", "clean.mp4")
    assert base.returncode == 0, base.stderr
    full = subprocess.run([sys.executable, "-m", "fvq", "score", "--json", "clean.mp4"], cwd=base_install["work"],
                          capture_output=True, text=True, timeout=300, env={**_env(), "PYTHONPATH": str(ROOT)})
    assert full.returncode == 0, full.stderr
    report = json.loads(base.stdout)
    assert "score" in report and len(report["windows"]) >= 5  # the model's score, not signals only
    assert base.stdout == full.stdout  # byte for byte: the same graphs, the same numbers, without torch


def test_serves_a_looped_sample_from_outside_the_checkout(base_install):
    proc = subprocess.Popen([str(base_install["venv"] / "bin" / "fvq"), "serve", "--port", "0", "--loop",
                             "cam=clean.mp4"], cwd=base_install["work"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=_env(FVQ_CACHE_DIR=str(base_install["cache"])))
    try:
        url = None
        assert proc.stdout is not None
        for line in proc.stdout:
            m = re.search(r"serving (http://\S+)/metrics", line)
            if m:
                url = m.group(1)
                break
        assert url, f"fvq serve exited ({proc.wait()}) without serving: {proc.stderr.read()[-2000:]}"
        deadline, text = time.monotonic() + 180, ""
        while time.monotonic() < deadline:
            text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
            if any(float(v) > 0 for v in WINDOWS.findall(text)):
                break
            time.sleep(0.5)
        assert any(float(v) > 0 for v in WINDOWS.findall(text)), "no window published within 180 s"
        assert re.search(r'^fvq_quality_score\{[^}]*stream="cam"[^}]*\} [0-9.]+$', text, re.M), text[-3000:]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_commands_that_need_an_extra_name_it_in_one_line(base_install):
    torch_bundle = base_install["tmp"] / "torch-bundle"  # the shipped bundle, served by the torch rater
    shutil.copytree(shipped_bundle(), torch_bundle)
    manifest = read_manifest(torch_bundle)
    manifest["rater"]["runtime"] = "torch"
    save_manifest(torch_bundle, manifest)
    cases = [
        (("export", "ckpt", "--out", "out"), {}, "export"),
        (("export", "--help"), {}, "export"),
        (("eval", "corpus"), {}, "train"),
        (("score", "clean.mp4"), {"FVQ_BUNDLE": str(torch_bundle)}, "train"),
        (("serve", "--port", "0", "cam=clean.mp4"), {"FVQ_BUNDLE": str(torch_bundle)}, "train"),
        (("serve", "--ray", "auto", "cam=clean.mp4"), {}, "cluster"),
    ]
    for argv, env, extra in cases:
        out = _fvq(base_install, *argv, timeout=120, **env)
        lines = out.stderr.strip().splitlines()
        assert out.returncode != 0 and len(lines) == 1, f"fvq {' '.join(argv)}: {out.returncode}\n{out.stderr}"
        assert f"pip install 'fvq-live[{extra}]'" in lines[0] and "Traceback" not in out.stderr, lines[0]
