"""Each variant TRL 1.16 also has, against TRL's own DPOTrainer._compute_loss on the same log-probs.

TRL computes its losses inside `DPOTrainer._compute_loss` from a model's per-token log-probs. The
harness below gives it a stub model whose per-token log-probs sum to the chosen per-sequence
values (one value in the first completion position, zeros after), with completion masks of the
chosen lengths, and precomputed reference log-probs; TRL then returns the batch-mean loss and
logs the mean rewards, which we compare with preftune's on the same inputs.

Documented differences (not tested for equality):
- TRL has no `dpop`, `simpo`, `orpo`, `rpo` or `cdpo` loss types in its DPOTrainer (1.16).
- TRL's `sft` averages over all chosen tokens of the batch (token-weighted); preftune's is the mean
  of per-sequence token averages. They agree when every chosen response has the same length, which
  is what the sft case below uses.
- preftune's `aot_pair` is TRL 1.16's `aot_unpaired`; preftune's `f_dpo` is TRL's `sigmoid` with `f_divergence_type`
  (TRL applies the divergence to other loss types too; preftune has it on the DPO loss, as the f-DPO paper does).
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

trl = pytest.importorskip("trl", reason="TRL is a test-only dependency (pip install -e .[dev])")
from accelerate import Accelerator  # noqa: E402
from trl.trainer.dpo_trainer import DPOTrainer  # noqa: E402

from preftune.losses import compute_loss  # noqa: E402

# preftune name -> (TRL loss_type, preftune params, TRL attributes)
CASES = {
    "dpo": ("sigmoid", {}, {}),
    "hinge": ("hinge", {}, {}),
    "ipo": ("ipo", {"normalize": "tokens"}, {}),
    "robust": ("robust", {"label_smoothing": 0.1}, {"label_smoothing": 0.1}),
    "exo_pair": ("exo_pair", {"label_smoothing": 1e-3}, {"label_smoothing": 1e-3}),
    "nca_pair": ("nca_pair", {}, {}),
    "bco_pair": ("bco_pair", {}, {}),
    "sppo_hard": ("sppo_hard", {}, {}),
    "aot": ("aot", {"label_smoothing": 0.0}, {}),
    "aot_pair": ("aot_unpaired", {"label_smoothing": 0.0}, {}),
    "apo_zero": ("apo_zero", {}, {}),
    "apo_down": ("apo_down", {}, {}),
    "discopop": ("discopop", {"tau": 0.05}, {"discopop_tau": 0.05}),
    "sft": ("sft", {}, {}),
    "sigmoid_norm": ("sigmoid_norm", {}, {}),
    "f_dpo": ("sigmoid", {"f_divergence_type": "js_divergence"}, {"f_divergence_type": "js_divergence"}),
    "f_dpo-forward_kl": ("sigmoid", {"f_divergence_type": "forward_kl"}, {"f_divergence_type": "forward_kl"}),
    "f_dpo-alpha-extreme": ("sigmoid", {"f_divergence_type": "alpha_divergence", "f_alpha_divergence_coef": 0.3},
                            {"f_divergence_type": "alpha_divergence", "f_alpha_divergence_coef": 0.3}),
    "f_dpo-alpha": ("sigmoid", {"f_divergence_type": "alpha_divergence", "f_alpha_divergence_coef": 0.3},
                    {"f_divergence_type": "alpha_divergence", "f_alpha_divergence_coef": 0.3}),
}


class StubModel(torch.nn.Module):
    """Returns fixed per-token log-probs in the shape TRL's fused LM head produces."""

    def __init__(self, log_probs: torch.Tensor):
        super().__init__()
        self.log_probs = log_probs

    def forward(self, **_: object) -> SimpleNamespace:
        n, t = self.log_probs.shape
        return SimpleNamespace(log_probs=self.log_probs, entropy=torch.zeros(n, t), mean_logits=torch.zeros(n, t),
                               is_top1=torch.zeros(n, t, dtype=torch.bool))


def trl_loss(loss_type: str, attrs: dict, pc, pr, rc, rr, lc, lr, beta: float) -> tuple[float, dict]:
    b = pc.shape[0]
    lengths = torch.cat([lc, lr]).long()
    width = int(lengths.max()) + 1
    completion_mask = torch.zeros(2 * b, width, dtype=torch.long)
    log_probs = torch.zeros(2 * b, width - 1, dtype=pc.dtype)
    for i, n in enumerate(lengths.tolist()):
        completion_mask[i, 1:1 + n] = 1
    log_probs[:, 0] = torch.cat([pc, pr])
    if loss_type == "sft":  # TRL's sft reads per-token values: spread each sum evenly over its tokens
        for i, n in enumerate(lengths.tolist()):
            log_probs[i, :n] = torch.cat([pc, pr])[i] / n
    trainer = DPOTrainer.__new__(DPOTrainer)
    accelerator = Accelerator(cpu=True)
    model = StubModel(log_probs)
    trainer.__dict__.update(dict(
        model=model, accelerator=accelerator, ld_alpha=None, precompute_ref_logps=True,
        f_divergence_type=attrs.get("f_divergence_type", "reverse_kl"), f_alpha_divergence_coef=attrs.get("f_alpha_divergence_coef", 0.5),
        loss_types=[loss_type], loss_weights=[1.0], beta=beta, label_smoothing=attrs.get("label_smoothing", 0.0),
        use_weighting=False, aux_loss_enabled=False, _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0, _tp_size=1, args=SimpleNamespace(discopop_tau=attrs.get("discopop_tau", 0.05))))
    inputs = {"input_ids": torch.zeros(2 * b, width, dtype=torch.long), "attention_mask": torch.ones(2 * b, width, dtype=torch.long),
              "completion_mask": completion_mask, "ref_chosen_logps": rc, "ref_rejected_logps": rr}
    loss = DPOTrainer._compute_loss(trainer, model, inputs, return_outputs=False)
    return float(loss), {k: v[-1] for k, v in trainer._metrics["train"].items()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_loss_and_rewards_match_trl_1_16(name: str) -> None:
    loss_type, params, attrs = CASES[name]
    g = torch.Generator().manual_seed(len(name))
    b = 16
    pc, pr, rc, rr = (-torch.rand(b, generator=g, dtype=torch.float64) * 60 for _ in range(4))
    if name.startswith("f_dpo"):  # log-ratios of a few nats, where the divergences differ but e^r stays in range
        pr, rc, rr = pc + torch.randn(b, generator=g, dtype=torch.float64), pc + torch.randn(b, generator=g, dtype=torch.float64), \
            pc + 2 * torch.randn(b, generator=g, dtype=torch.float64)
    lc = torch.randint(1, 40, (b,), generator=g).double()
    lr = torch.randint(1, 40, (b,), generator=g).double()
    if name == "sft":
        lc = torch.full((b,), 7.0, dtype=torch.float64)
    beta = 0.1
    rel = 1e-6
    if name.startswith("f_dpo-alpha"):  # TRL's α-divergence clamps by dtype and knows no float64
        if name == "f_dpo-alpha-extreme":  # log-ratios of −150: (α − 1)·r past the clamp at 80 for some pairs
            rc, rr = pc + 150 + torch.rand(b, generator=g, dtype=torch.float64) * 10, pr + 100 + torch.rand(b, generator=g, dtype=torch.float64) * 30
        pc, pr, rc, rr = (t.float() for t in (pc, pr, rc, rr))
        rel = 1e-5
    ours = compute_loss(name.split("-")[0], policy_chosen_logps=pc, policy_rejected_logps=pr, reference_chosen_logps=rc,
                        reference_rejected_logps=rr, chosen_lengths=lc, rejected_lengths=lr, beta=beta, **params)
    theirs, metrics = trl_loss(loss_type, attrs, pc, pr, rc, rr, lc, lr, beta)
    assert ours.losses.mean().item() == pytest.approx(theirs, rel=rel)
    assert ours.chosen_rewards.mean().item() == pytest.approx(metrics["rewards/chosen"], rel=rel, abs=1e-9)
    assert ours.rejected_rewards.mean().item() == pytest.approx(metrics["rewards/rejected"], rel=rel, abs=1e-9)
    assert metrics["logps/chosen"] == pytest.approx(pc.mean().item(), rel=rel)
