"""The same configuration gives the same metrics, step by step, as the stored run of each case: DPO with full
fine-tuning and with LoRA, KTO and SFT, 6 steps each on the tiny model. A change to how set-up, the loop or the
objectives are organized must not move a number; a change meant to move one regenerates the file, on purpose:

    python -m tests.training.test_metric_parity          # rewrites tests/training/parity_metrics.json
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import pytest

from .helpers import tiny_config, train_metrics

STORED = Path(__file__).with_name("parity_metrics.json")
CASES = {
    "dpo_full": [],
    "dpo_lora": ["model.lora.enabled=true", "model.lora.target_modules=all-linear", "train.learning_rate=2e-2"],
    "kto": ["loss.name=kto"],
    "sft": ["stage=sft"],
}
KEYS = ("loss", "grad_norm", "learning_rate", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
        "logps/chosen", "logps/rejected", "logits/chosen", "logits/rejected", "kl", "mean_token_accuracy", "perplexity", "num_pairs")


def run_case(folder: Path, model_dir: Path, name: str) -> list[dict[str, float]]:
    from preftune.training.run import train

    cfg = tiny_config(folder, model_dir, *CASES[name], "train.max_steps=6", "report=false", name=name)
    result = train(cfg, show_progress=False)
    return [{k: m[k] for k in KEYS if k in m} for m in train_metrics(result.output_dir)]


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_metrics_of_each_step_are_the_stored_ones(name: str, tmp_path: Path, tiny_model_dir: Path) -> None:
    want = json.loads(STORED.read_text())[name]
    got = run_case(tmp_path, tiny_model_dir, name)
    assert [sorted(s) for s in got] == [sorted(s) for s in want]
    for step, (g, w) in enumerate(zip(got, want, strict=True), start=1):
        assert g == pytest.approx(w, rel=1e-5, abs=1e-7), f"{name}, step {step}"


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.conftest import build_tiny_model, load_smol_tokenizer

    tok = load_smol_tokenizer()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_model(Path(tmp) / "tiny", tok)
        for case in CASES:
            (Path(tmp) / case).mkdir()
            out[case] = run_case(Path(tmp) / case, model, case)
    STORED.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {STORED}")
