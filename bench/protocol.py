"""The one measurement protocol of preftune's published numbers: every result file records how it was made.

`provenance(...)` gives the block a benchmark stores under "protocol": the command, the commit measured (with
"+dirty" when preftune/ or bench/ had uncommitted changes), the date (UTC), the machine (CPU, cores, torch threads,
torch version, float32 matmul GFLOP/s measured in the same run), the rounds and the timed steps. `spread(values)`
is how a repeated measurement is reported: every round's value, then the median with min and max. Speed comparisons
run at least `MIN_ROUNDS` rounds of at least `MIN_TIMED_STEPS` timed steps; a result below that is a smoke test and
`quotable()` says so, so the docs' table generator never publishes it."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MIN_ROUNDS = 3
MIN_TIMED_STEPS = 8


def git_commit(root: Path = ROOT) -> str:
    """The checked-out commit, with "+dirty" when preftune/ or bench/ differ from it (results/ excluded)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "preftune", "bench", ":(exclude)bench/results"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def machine(matmul_gflops: float | None) -> dict[str, Any]:
    """What ran it: CPU, cores, torch's threads and version, and the matmul rate measured in the same run."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "matmul_gflops": None if matmul_gflops is None else round(matmul_gflops, 1)}


def provenance(command: str, *, rounds: int | None, timed_steps: int | None, matmul_gflops: float | None) -> dict[str, Any]:
    """The "protocol" block of a result file."""
    return {"command": command, "commit": git_commit(), "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
            "machine": machine(matmul_gflops), "rounds": rounds, "timed_steps": timed_steps}


def spread(values: list[float]) -> dict[str, Any]:
    """Every round's value, and their median, min and max."""
    return {"values": list(values), "min": min(values), "median": statistics.median(values), "max": max(values)}


def quotable(protocol: dict[str, Any]) -> bool:
    """True when a speed result meets the protocol's floor: enough rounds and timed steps to be published."""
    return (protocol.get("rounds") or 0) >= MIN_ROUNDS and (protocol.get("timed_steps") or 0) >= MIN_TIMED_STEPS
