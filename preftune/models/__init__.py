"""Models: loading (HF folders, GGUF, the embedded default), LoRA, and per-sequence log-probabilities."""
