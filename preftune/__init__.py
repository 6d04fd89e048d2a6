"""preftune: align causal language models with human preferences by DPO and its family.

    import preftune
    result = preftune.train("examples/quickstart.yaml", overrides={"train.max_steps": 5}, output_dir=None)
    result.history[-1]["rewards/margins"], result.model
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> module: imported on first use, so `preftune --help` does not load torch
_EXPORTS = {"train": "api", "sft": "api", "compare": "api", "sweep": "sweeping", "evaluate": "api", "iterate_rounds": "api", "export_model": "api", "load_config": "config", "RunConfig": "config", "compute_loss": "losses", "LOSSES": "losses",
            "TrainResult": "training.callbacks", "Callback": "training.callbacks"}

__all__ = ["__version__", "train", "sft", "compare", "sweep", "evaluate", "iterate_rounds", "export_model", "load_config", "RunConfig", "compute_loss", "LOSSES", "TrainResult", "Callback"]

if TYPE_CHECKING:
    from .sweeping import sweep
    from .api import compare, evaluate, export_model, iterate_rounds, sft, train
    from .config import RunConfig, load_config
    from .losses import LOSSES, compute_loss
    from .training.callbacks import Callback, TrainResult


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'preftune' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
