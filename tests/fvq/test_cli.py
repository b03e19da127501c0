"""The `fvq` command: each subcommand's module is imported only when that subcommand runs; the serving alias."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# What a command line imported, by layer; run in a fresh interpreter so nothing is imported already.
PROBE = """
import json, sys
from fvq.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & {'export', 'train', 'torch', 'numpy', 'pydantic'})))
"""


def imported_by(*argv: str) -> tuple[list[str], str]:
    out = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stdout


@pytest.mark.parametrize("argv", [("serve", "--help"), ("score", "--help"), ("--help",), ("serve", "--port", "x")])
def test_serving_help_and_argument_errors_import_no_layer_above_stream(argv):
    imported, _ = imported_by(*argv)
    assert imported == [], f"`fvq {' '.join(argv)}` imported {imported}"


def test_export_registers_its_own_arguments_when_asked():
    imported, text = imported_by("export", "--help")
    assert "export" in imported and "train" not in imported
    assert "--precision" in text and "--eval-root" in text and "--out" in text


def test_missing_subcommand_and_unknown_option_exit_2():
    out = subprocess.run([sys.executable, "-m", "fvq"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "the following arguments are required: command" in out.stderr
    out = subprocess.run([sys.executable, "-m", "fvq", "export", "ckpt"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--out" in out.stderr


def test_stream_cli_runs_the_serving_subcommands_only():
    alias = [sys.executable, "-m", "stream.cli"]
    help_ = subprocess.run([*alias, "serve", "--help"], capture_output=True, text=True, timeout=60)
    full = subprocess.run([sys.executable, "-m", "fvq", "serve", "--help"], capture_output=True, text=True,
                          timeout=60)
    assert help_.returncode == 0 and help_.stdout == full.stdout
    out = subprocess.run([*alias, "export", "ckpt", "--out", "x"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "invalid choice: 'export'" in out.stderr
