"""The registry of inference runtimes, keyed by name; optional runtimes are imported only when chosen."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from engines.base import Engine


@dataclass(frozen=True)
class EngineEntry:
    key: str
    config_cls: type[BaseModel]
    engine_cls: type[Engine]


_REGISTRY: dict[str, EngineEntry] = {}

# Runtimes that ship with the project. Each module registers itself on import; importing lazily keeps
# optional back-ends (TensorRT) out of processes that never ask for them.
_BUILTIN_MODULES = {
    "onnxruntime": "engines.onnxruntime",
    "torch": "engines.torch",
    "tensorrt": "engines.tensorrt",
}


class UnknownEngineError(ValueError):
    pass


def register_engine(key: str, config_cls: type[BaseModel], engine_cls: type[Engine]) -> None:
    """Adds a runtime. A key can be registered once; a second registration is a programming error."""
    if key in _REGISTRY:
        raise ValueError(f"engine {key!r} is already registered (by {_REGISTRY[key].engine_cls.__module__})")
    _REGISTRY[key] = EngineEntry(key, config_cls, engine_cls)


def engine_keys() -> list[str]:
    return sorted(set(_REGISTRY) | set(_BUILTIN_MODULES))


def get_entry(key: str) -> EngineEntry:
    if key not in _REGISTRY:
        module = _BUILTIN_MODULES.get(key)
        if module is None:
            raise UnknownEngineError(f"unknown engine {key!r}; valid engines: {', '.join(engine_keys())}")
        importlib.import_module(module)
    return _REGISTRY[key]


def create_engine(key: str, config: dict[str, Any] | BaseModel | None = None) -> Engine:
    """Builds the runtime `key` from its config (a dict is validated by the runtime's config class)."""
    entry = get_entry(key)
    if config is None:
        config = entry.config_cls()
    elif isinstance(config, dict):
        config = entry.config_cls.model_validate(config)
    engine = entry.engine_cls(config)
    engine.check_available()
    return engine
