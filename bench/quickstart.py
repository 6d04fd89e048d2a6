"""The first run a user makes, measured: `preftune train examples/quickstart.yaml` in its own process, timed as a
whole (the embedded model already converted), with its peak RSS and the held-out numbers and findings it reports.

    python bench/quickstart.py [--keep runs/quickstart]      # about 4 minutes on a 2-core CPU

Writes bench/results/quickstart.json (with the protocol block: command, commit, date, machine)."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from compare_trl import matmul_flops  # noqa: E402
from protocol import provenance  # noqa: E402

ROOT = HERE.parent


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", help="leave the run folder here (e.g. runs/quickstart, for examples/export_check.py)")
    args = ap.parse_args()
    gflops = matmul_flops() / 1e9
    with tempfile.TemporaryDirectory(prefix="preftune-quickstart-") as tmp:
        out = Path(args.keep).resolve() if args.keep else Path(tmp) / "quickstart"
        shutil.rmtree(out, ignore_errors=True)  # a fresh run, as a user's first
        cmd = [sys.executable, "-m", "preftune.cli", "train", str(ROOT / "examples" / "quickstart.yaml"), f"output_dir={out}"]
        env = {**os.environ, "PREFTUNE_DATA_CACHE": str(Path(tmp) / "data-cache")}  # tokenized afresh; the converted model is reused
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"the quickstart failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        summary = json.loads((out / "summary.json").read_text())
    findings: dict[str, int] = {}
    for f in summary["diagnostics"]:  # every firing, in step order: keep each kind's first
        findings.setdefault(f["kind"], f["step"])
    result = {"protocol": provenance("python bench/quickstart.py", rounds=1, timed_steps=summary["steps"], matmul_gflops=gflops),
              "wall_seconds": wall, "peak_rss_mib": peak_mib, "steps": summary["steps"], "before": summary["before"],
              "after": summary["after"], "findings": findings}
    (HERE / "results" / "quickstart.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "protocol"}, indent=1))


if __name__ == "__main__":
    main()
