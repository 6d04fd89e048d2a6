"""The inputs and outputs every preference loss shares."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PairLogps:
    """Per-sequence log-probabilities of B pairs, each (B,), summed over response tokens only.

    `reference_*` are zeros for reference-free losses. `chosen_lengths` / `rejected_lengths` are the
    response token counts (float, ≥ 1).
    """

    policy_chosen: torch.Tensor
    policy_rejected: torch.Tensor
    reference_chosen: torch.Tensor
    reference_rejected: torch.Tensor
    chosen_lengths: torch.Tensor
    rejected_lengths: torch.Tensor

    @property
    def chosen_logratios(self) -> torch.Tensor:
        """log πθ(y_w|x) − log πref(y_w|x)."""
        return self.policy_chosen - self.reference_chosen

    @property
    def rejected_logratios(self) -> torch.Tensor:
        """log πθ(y_l|x) − log πref(y_l|x)."""
        return self.policy_rejected - self.reference_rejected

    @property
    def margin(self) -> torch.Tensor:
        """h = chosen log-ratio − rejected log-ratio (the DPO paper's implicit reward difference over β)."""
        return self.chosen_logratios - self.rejected_logratios


@dataclass(frozen=True)
class LossOutput:
    """Per-example losses (B,) with gradients, and the implicit rewards (B,), detached."""

    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor
