"""`preftune export`: a trained model out to where people run it: a merged Hugging Face folder, or one GGUF file for
llama.cpp / Ollama (f32, f16 or q8_0)."""

from __future__ import annotations

from .run import FORMATS, export

__all__ = ["FORMATS", "export"]
