"""The names of the files and folders in a preftune run folder, and the atomic writers every module uses for them:
one place for every module that writes or reads them."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
MODEL_CARD = "README.md"
MODEL_DIR = "model"
MERGED_DIR = "merged"
DATA_SUMMARY = "data_summary.json"
EVAL_PAIRS = "eval_pairs.jsonl"
DIAGNOSTICS = "diagnostics.json"
ADAPTER_CONFIG = "adapter_config.json"
SAMPLES = "samples.jsonl"


def read_run_file(path: Path, kind: str = "json") -> Any:
    """A run folder's JSON or YAML file, parsed; any damage (unreadable, not UTF-8, not valid) is a PreftuneError that
    names the file, the line where known, and the fix."""
    import json

    import yaml

    from .errors import PreftuneError

    fix = "Fix: re-run the step that writes it, or restore the file."
    try:
        text = path.read_text(encoding="utf-8")
        return json.loads(text) if kind == "json" else yaml.safe_load(text)
    except json.JSONDecodeError as e:
        raise PreftuneError(f"{path}: line {e.lineno}: not valid JSON ({e.msg}). {fix}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise PreftuneError(f"{path}{f': line {mark.line + 1}' if mark else ''}: not valid YAML ({getattr(e, 'problem', None) or e}). {fix}") from None
    except UnicodeDecodeError:
        raise PreftuneError(f"{path}: not UTF-8 text. {fix}") from None
    except OSError as e:
        raise PreftuneError(f"{path}: cannot be read ({e.strerror or e}). {fix}") from None


def check_writable(folder: Path, what: str) -> None:
    """Create `folder` when missing and write a probe file in it, before any work is done: a PreftuneError naming `what`
    (the key or flag that chose the folder) when that fails."""
    from .errors import PreftuneError

    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".preftune-write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise PreftuneError(f"{what} {folder}: not writable ({e.strerror or e}). Fix: choose a folder you can write to.") from None


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file through a temporary file and a rename, so a reader never sees half of it; the temporary name is
    the writer's own, so processes writing the same file at once (sweep workers ending together) each replace it whole."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json(path: Path, value: Any) -> None:
    write_text_atomic(path, json.dumps(value, indent=1))


def write_jsonl(path: Path, records: Iterable[Any], ensure_ascii: bool = True) -> None:
    """One JSON object a line, written atomically (`ensure_ascii=False` keeps non-ASCII text as is)."""
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=ensure_ascii) + "\n" for r in records))
