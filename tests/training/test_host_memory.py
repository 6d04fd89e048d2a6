"""train.host_mmap_threshold_kib: with the threshold fixed, freed activation-sized tensors leave the process; with
glibc's default (dynamic) threshold, a freed large block moves later ones into the heap, where they stay resident."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from preftune.config import load_config
from preftune.training import host_memory

SCRIPT = textwrap.dedent("""
    import sys, torch
    from preftune.training.host_memory import fix_mmap_threshold
    def rss_mib():
        return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
    applied = fix_mmap_threshold(None if sys.argv[1] == "default" else 128)
    x = torch.ones(8 * 2**20 // 4); del x   # a freed 8 MiB block raises glibc's dynamic mmap threshold
    base = rss_mib()
    kept = [torch.ones(4 * 2**20 // 4) for _ in range(64)]  # 256 MiB of 4 MiB tensors, like a layer's activations
    kept = kept[1::2]; small = [torch.ones(16) for _ in range(1000)]; kept.clear()
    print(applied, rss_mib() - base)
""")


def resident_after_free(setting: str) -> tuple[bool, float]:
    out = subprocess.run([sys.executable, "-c", SCRIPT, setting], capture_output=True, text=True, check=True).stdout.split()
    return out[0] == "True", float(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt exists on Linux only")
def test_a_fixed_mmap_threshold_returns_freed_tensors_to_the_system() -> None:
    applied, fixed = resident_after_free("fixed")
    _, default = resident_after_free("default")
    assert applied
    assert fixed < 32 and default > 4 * fixed, (fixed, default)  # MiB still resident after freeing 256 MiB


def test_every_training_run_applies_the_configured_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    from preftune.training.setup import make_accelerator

    seen: list[int | None] = []
    monkeypatch.setattr(host_memory, "fix_mmap_threshold", seen.append)
    make_accelerator(load_config(None, ["train.host_mmap_threshold_kib=256"]))
    make_accelerator(load_config(None, ["train.host_mmap_threshold_kib=null"]))
    assert seen == [256, None]
