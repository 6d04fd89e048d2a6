"""A tiny training run whose folder the report tests read, and a headless Chromium page (skipped where none)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest

from preftune import train

from ..training.helpers import tiny_config


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """12 steps of DPO on toy pairs, a quarter held out, evaluated every 4 steps, checkpoint every 6: the run folder."""
    tmp = tmp_path_factory.mktemp("report-run")
    cfg = tiny_config(tmp, tiny_model_dir, "data.eval_fraction=0.25", "train.max_steps=12", "train.eval_every=4",
                      "train.learning_rate=1e-2", "train.save_every=6")
    import os

    os.environ["PREFTUNE_DATA_CACHE"] = str(tmp / "cache")
    return train(cfg, progress=False).output_dir


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, driven by Playwright; skips with the reason where either is missing."""
    path = chromium_path()
    if path is None:
        pytest.skip("Chromium is not installed (apt-get install chromium; .ci/run does this on a fresh machine)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                                                          "--disable-background-networking", "--disable-extensions"])
        yield b
        b.close()
