"""The optional parts of fvq-live (pip extras): the modules each brings, and the one line a command says without one.

The base install serves (`fvq serve`, `fvq score`) on ONNX Runtime with the shipped bundle; training, export, GPU
runtimes and Ray are extras (pyproject.toml's `[project.optional-dependencies]`, which this table mirrors).
Nothing here imports the modules it names: `importlib.util.find_spec` only looks for them.
"""

from __future__ import annotations

import importlib.util

DIST = "fvq-live"

# extra -> (what it is for, the top-level modules it brings that fvq-live imports)
EXTRAS: dict[str, tuple[str, tuple[str, ...]]] = {
    "train": ("training, evaluation and torch bundles",
              ("torch", "transformers", "peft", "tokenizers", "safetensors", "jinja2", "scipy", "tqdm",
               "sklearn", "skimage", "skvideo")),
    "export": ("exporting a checkpoint to an ONNX bundle",
               ("torch", "transformers", "peft", "tokenizers", "safetensors", "jinja2", "scipy", "tqdm",
                "sklearn", "skimage", "skvideo", "onnxscript")),
    "gpu": ("the TensorRT engine on NVIDIA GPUs", ("tensorrt",)),
    "cluster": ("Ray workers and the Ray Serve rater", ("ray",)),
}

# the subcommands that need an extra before their arguments are even read
COMMAND_EXTRA = {"eval": "train", "export": "export"}


class MissingExtraError(RuntimeError):
    """A command needs an extra that is not installed; the message is the one line to show."""

    def __init__(self, extra: str, needed_by: str, missing: list[str]) -> None:
        self.extra = extra
        self.missing = missing
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        super().__init__(f"{needed_by} needs the {extra} extra, for {EXTRAS[extra][0]} ({missing[0]}{more} not "
                         f"installed): {install_line(extra)}")


def install_line(extra: str) -> str:
    return f"pip install '{DIST}[{extra}]'"


def missing_modules(extra: str) -> list[str]:
    """The modules of `extra` that cannot be found in this environment (none imported)."""
    return [m for m in EXTRAS[extra][1] if importlib.util.find_spec(m) is None]


def require_extra(extra: str, needed_by: str) -> None:
    """Raises MissingExtraError when any module of `extra` is missing."""
    missing = missing_modules(extra)
    if missing:
        raise MissingExtraError(extra, needed_by, missing)


def extra_for_module(module: str | None, command: str | None = None) -> str | None:
    """The extra that brings `module` (a dotted name; its top level counts), preferring the one the command needs."""
    if not module:
        return None
    top = module.split(".")[0]
    preferred = COMMAND_EXTRA.get(command or "")
    if preferred is not None and top in EXTRAS[preferred][1]:
        return preferred
    for extra, (_, modules) in EXTRAS.items():
        if top in modules:
            return extra
    return None


__all__ = ["COMMAND_EXTRA", "DIST", "EXTRAS", "MissingExtraError", "extra_for_module", "install_line",
           "missing_modules", "require_extra"]
