"""The zoo: every model an assignment needs, trained by our own scripts and shipped as safetensors.

Each model is one module in this package (nanoGPT style: a config dataclass, a plain training
loop) that defines:

- ``ZOO_NAME``: the model's name (``interplab zoo train ZOO_NAME``);
- ``train(out_dir: Path, seed: int | None = None) -> dict``: trains with fixed seeds (``seed``
  replaces the recipe's seed), writes ``<name>.safetensors`` and ``<name>.json`` (the card: recipe,
  training time, quality metrics) into ``out_dir``, returns the card;
- ``load() -> torch.nn.Module``: builds the model from the shipped weights, never touching the network;
- ``verify(model) -> dict[str, bool]``: quality checks on held-out data (used by ``interplab zoo verify``).

Modules are discovered, so adding a model touches no shared file.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import pkgutil
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

WEIGHTS_DIR = Path(__file__).parent / "weights"


Config = TypeVar("Config")


def with_seed(cfg: Config, seed: int | None) -> Config:
    """``cfg`` (a config dataclass with a ``seed`` field) with ``seed`` in place of the recipe's
    seed; unchanged when ``seed`` is None (``interplab zoo train NAME --seed N``)."""
    return cfg if seed is None else dataclasses.replace(cfg, seed=seed)


def registry() -> dict[str, ModuleType]:
    """ZOO_NAME -> module, for every model module in this package."""
    found = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        name = getattr(module, "ZOO_NAME", None)
        if name:
            found[name] = module
    return found


def module_for(name: str) -> ModuleType:
    """The module of zoo model ``name``: ``interplab.zoo.<name with - as _>`` when it declares that
    ZOO_NAME (imports nothing else), otherwise found by scanning every model module."""
    try:
        module = importlib.import_module(f"{__name__}.{name.replace('-', '_')}")
        if getattr(module, "ZOO_NAME", None) == name:
            return module
    except ModuleNotFoundError:
        pass
    models = registry()
    if name not in models:
        raise KeyError(f"no zoo model {name!r}; known: {', '.join(sorted(models)) or 'none'}")
    return models[name]


def load(name: str) -> Any:
    """Load a shipped zoo model by name (offline)."""
    return module_for(name).load()


def card(name: str) -> dict[str, Any]:
    path = WEIGHTS_DIR / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"zoo model {name!r} has no card at {path}; run `interplab zoo train {name}`")
    return json.loads(path.read_text())


def weights_path(name: str) -> Path:
    path = WEIGHTS_DIR / f"{name}.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"zoo model {name!r} has no weights at {path}; run `interplab zoo train {name}`")
    return path
