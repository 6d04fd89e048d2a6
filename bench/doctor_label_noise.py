"""How well the data doctor's label-noise score finds flipped labels: a seeded share of a data set's pairs get chosen
and rejected swapped, `preftune data doctor`'s model checks (cross-fitted brief DPO runs with the embedded model)
score every pair, and the AUROC of `suspect` against the flips and the precision among the top share are stored with
the protocol block in bench/results/doctor_label_noise_<data>.json.

    python bench/doctor_label_noise.py --data builtin:arithmetic --pairs 320
    python bench/doctor_label_noise.py --data ../shared/data/hh-rlhf-harmless/train.jsonl --pairs 1000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main() -> None:
    from protocol import provenance

    from preftune.config import load_config
    from preftune.data.doctor import load_pairs
    from preftune.evaluation.label_noise import CrossFit, auroc, confident_threshold, likely_mislabeled, model_checks, precision_at

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="builtin:arithmetic")
    ap.add_argument("--pairs", type=int, default=320, help="the first N readable pairs")
    ap.add_argument("--flip", type=float, default=0.2, help="share of labels flipped (seeded)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args()

    overrides = ["data.on_error=skip", "data.builtin_size=" + str(max(args.pairs, 64))]
    settings = load_config(None, overrides).data.settings(train=args.data)
    pairs, _ = load_pairs(settings.train, settings)
    pairs = pairs[: args.pairs]
    flipped = set(random.Random(args.seed).sample(range(len(pairs)), round(args.flip * len(pairs))))
    noisy = [dataclasses.replace(p, chosen=p.rejected, rejected=p.chosen) if i in flipped else p for i, p in enumerate(pairs)]
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="preftune-doctor-") as d:
        scores = model_checks(noisy, "smollm2-135m-instruct", Path(d), CrossFit(args.folds, args.steps, args.seed), show=True)
    seconds = time.time() - start
    truth = [i in flipped for i in range(len(pairs))]
    scored = [(s["suspect"], t) for s, t in zip(scores, truth) if s["suspect"] is not None]
    threshold = confident_threshold(scores)
    flagged = [likely_mislabeled(s, threshold) for s in scores]
    caught = sum(f and t for f, t in zip(flagged, truth))
    command = "python bench/doctor_label_noise.py " + " ".join(sys.argv[1:])
    result = {"protocol": provenance(command.strip(), rounds=1, timed_steps=None, matmul_gflops=None),
              "data": args.data, "pairs": len(pairs), "flipped": len(flipped), "folds": args.folds, "steps_per_fold": args.steps,
              "scored": len(scored), "auroc": auroc([s for s, _ in scored], [t for _, t in scored]),
              "precision_at_flip_share": precision_at([s for s, _ in scored], [t for _, t in scored], args.flip),
              "threshold": threshold, "flagged": sum(flagged), "flagged_flipped": caught,
              "flagged_precision": caught / sum(flagged) if sum(flagged) else None, "flagged_recall": caught / len(flipped) if flipped else None,
              "seconds": seconds}
    name = "doctor_label_noise_" + ("arithmetic" if args.data.startswith("builtin") else Path(args.data).parent.name)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
