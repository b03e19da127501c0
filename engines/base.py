"""The runtime interface: an engine loads a model file into a session that maps named arrays to arrays."""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from pydantic import BaseModel


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in 1 MiB chunks (bundles, ONNX graphs, training clips)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class EngineUnavailableError(RuntimeError):
    """The chosen runtime cannot run on this machine; the message says what to install."""


class Session(abc.ABC):
    """A loaded model. `run` takes and returns numpy arrays so a session can sit behind a remote call."""

    input_names: list[str]
    output_names: list[str]

    @abc.abstractmethod
    def run(self, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]: ...


class Engine(abc.ABC):
    KEY: str = ""

    def __init__(self, config: BaseModel) -> None:
        self.config = config

    def check_available(self) -> None:  # noqa: B027 - optional hook, most runtimes have nothing to check
        """Raises EngineUnavailableError with an install hint when the runtime is missing."""

    @abc.abstractmethod
    def load(self, model_path: Path) -> Session: ...
