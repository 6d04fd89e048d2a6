"""The precomputed reference fills as the run uses pairs: only the pairs a run trains on are computed, a later run reuses
them and computes only the new ones, `upfront` computes the same pairs before step 1, the numbers equal a whole-split
pass, processes and runs merge into one cache file, a frozen copy is let go once the run's pairs are covered, and the
pass shows progress."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from preftune.data.stream import BatchStream
from preftune.training.loop import fit
from preftune.training.callbacks import Callbacks
from preftune.scoring.reference import ReferenceTable
from preftune.training.run import train
from preftune.training.setup import precompute_reference, setup_run

from .helpers import tiny_config, train_metrics


def cached(folder: Path) -> dict[str, torch.Tensor]:
    files = list(folder.glob("*.safetensors"))
    assert len(files) == 1, files
    return load_file(str(files[0]))


def filled(table: dict[str, torch.Tensor]) -> torch.Tensor:
    return (~torch.isnan(table["chosen"]) & ~torch.isnan(table["rejected"])).nonzero().flatten()


def test_a_run_computes_only_the_pairs_it_trains_on_and_a_later_run_only_the_new_ones(tmp_path: Path, tiny_model_dir: Path) -> None:
    cfg = tiny_config(tmp_path, tiny_model_dir, "reference.strategy=precomputed", "train.batch_size=2", "train.max_steps=3", "train.shuffle=true",
                      name="short")
    run = setup_run(cfg)
    planned = {i for b in BatchStream(run.data.train).planned(3) for i in b}
    assert len(planned) == 6 < len(run.data.train.pairs) == 40
    fit(run, Callbacks([]), show_progress=False)
    assert run.ref_train.computed == 6  # type: ignore[attr-defined]
    first = cached(tmp_path / "ref")
    assert set(filled(first).tolist()) == planned  # nothing else paid for

    longer = tiny_config(tmp_path, tiny_model_dir, "reference.strategy=precomputed", "train.batch_size=2", "train.max_steps=6", "train.shuffle=true",
                         name="longer")
    run2 = setup_run(longer)
    fit(run2, Callbacks([]), show_progress=False)
    planned2 = {i for b in BatchStream(run2.data.train).planned(6) for i in b}
    assert run2.ref_train.computed == len(planned2 - planned) == 6  # type: ignore[attr-defined]  # the first 3 steps' pairs came from the cache
    second = cached(tmp_path / "ref")
    assert set(filled(second).tolist()) == planned2
    old = torch.tensor(sorted(planned))
    assert torch.equal(second["chosen"][old], first["chosen"][old])


def test_lazy_and_upfront_equal_a_whole_split_pass(tmp_path: Path, tiny_model_dir: Path) -> None:
    whole = tiny_config(tmp_path, tiny_model_dir, "reference.strategy=precomputed", "train.max_steps=3", f"reference.cache_dir={tmp_path / 'all'}")
    everything = cached(precompute_reference(whole))
    assert filled(everything).numel() == 40
    losses = {}
    for mode in ("lazy", "upfront"):
        cfg = tiny_config(tmp_path, tiny_model_dir, "reference.strategy=precomputed", "train.max_steps=3", f"reference.precompute={mode}",
                          "model.lora.enabled=true", "train.learning_rate=2e-2", f"reference.cache_dir={tmp_path / mode}", name=mode)
        train(cfg, show_progress=False)
        table = cached(tmp_path / mode)
        idx = filled(table)
        assert idx.numel() == 12  # 3 steps of 4 pairs
        torch.testing.assert_close(table["chosen"][idx], everything["chosen"][idx], atol=1e-5, rtol=0)
        torch.testing.assert_close(table["rejected"][idx], everything["rejected"][idx], atol=1e-5, rtol=0)
        losses[mode] = [m["loss"] for m in train_metrics(tmp_path / mode)]
    separate = tiny_config(tmp_path, tiny_model_dir, "reference.strategy=adapter_disabled", "train.max_steps=3", "model.lora.enabled=true",
                           "train.learning_rate=2e-2", name="live")
    train(separate, show_progress=False)
    live = [m["loss"] for m in train_metrics(tmp_path / "live")]
    assert live[-1] < live[0]
    assert losses["lazy"] == pytest.approx(live, abs=1e-5) and losses["upfront"] == pytest.approx(live, abs=1e-5)


def test_upfront_computes_before_the_first_step_and_the_frozen_copy_is_freed_once_covered(tmp_path: Path, tiny_model_dir: Path) -> None:
    up = setup_run(tiny_config(tmp_path, tiny_model_dir, "reference.strategy=precomputed", "reference.precompute=upfront", "train.max_steps=2",
                               name="up"))
    assert filled(cached(tmp_path / "ref")).numel() == 8 and up.ref_train.live is None  # type: ignore[attr-defined]
    lazy = setup_run(tiny_config(tmp_path, tiny_model_dir, "reference.strategy=precomputed", "train.max_steps=4", name="lazy"))
    assert lazy.ref_train.live is not None  # type: ignore[attr-defined]  # steps 3-4's pairs are not cached yet
    fit(lazy, Callbacks([]), show_progress=False)
    assert lazy.ref_train.live is None and lazy.ref_train.computed == 8  # type: ignore[attr-defined]


def test_tables_of_two_processes_merge_into_one_cache_file(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    a, b = ReferenceTable(6, path), ReferenceTable(6, path)
    a.fill(torch.tensor([0, 1, 2]), torch.tensor([-1.0, -2.0, -3.0]), torch.tensor([-4.0, -5.0, -6.0]))
    b.fill(torch.tensor([3, 5]), torch.tensor([-7.0, -8.0]), torch.tensor([-9.0, -10.0]))
    a.save()
    b.save()
    saved = load_file(str(path))
    assert saved["chosen"].tolist()[:4] == [-1.0, -2.0, -3.0, -7.0] and saved["chosen"][5] == -8.0 and torch.isnan(saved["chosen"][4])
    c = ReferenceTable(6, path)
    assert c.has(torch.tensor([0, 1, 2, 3, 5])) and not c.has(torch.tensor([4])) and c.filled == 5
    assert ReferenceTable(7, path).filled == 0  # another size is another table: recomputed, never misread


def test_precompute_ref_shows_progress_off_a_terminal(tmp_path: Path, tiny_model_dir: Path) -> None:
    from preftune.training.outputs import write_config

    path = tmp_path / "c.yaml"
    write_config(tiny_config(tmp_path, tiny_model_dir, "reference.strategy=precomputed", "data.eval_fraction=0.2"), path)
    out = subprocess.run([sys.executable, "-m", "preftune", "precompute-ref", str(path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert re.search(r"reference \(train\): 32 to do", out.stderr) and re.search(r"reference \(eval\): 8 to do", out.stderr), out.stderr
