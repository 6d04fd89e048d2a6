"""preftune: align causal language models with human preferences by DPO and its family."""

__version__ = "0.1.0"
