"""The distributed modes' own decisions, without launching processes: which reference each can run, and how each
places a separate reference (the two-process runs in tests/distributed check the modes end to end)."""

from __future__ import annotations

import pytest
import torch

from preftune.errors import ConfigError
from preftune.models.logprobs import LogpsModel
from preftune.scoring.choice import choose_reference
from preftune.training import modes


def test_fsdp_on_cpu_refuses_a_reference_made_of_the_policys_own_weights() -> None:
    cpu_fsdp = modes.CpuFSDP(accelerator=None)
    for choice in (choose_reference("auto", adapter_base="base"), choose_reference("adapter_disabled", adapter_base="b", keep_start_adapter=True)):
        with pytest.raises(ConfigError, match="FSDP on CPU does not gather.*Fix: reference.strategy: separate"):
            cpu_fsdp.check(choice)
    cpu_fsdp.check(choose_reference("separate", start="m"))
    cpu_fsdp.check(choose_reference("none"))
    for mode in (modes.Mode(None), modes.AcceleratorFSDP(None), modes.DeepSpeedZeRO(None)):
        mode.check(choose_reference("auto", adapter_base="base"))  # the policy's weights are at hand in these modes


def test_a_reference_is_placed_as_is_unless_the_mode_shards(monkeypatch: pytest.MonkeyPatch) -> None:
    model = torch.nn.Linear(2, 2)
    assert modes.Mode(None).shard_reference(model, 8) is model
    assert modes.DeepSpeedZeRO(None).shard_reference(model, 8) is model
    sharded: list[torch.nn.Module] = []
    monkeypatch.setattr(modes.sharding, "shard", lambda m: sharded.append(m) or m)
    out = modes.CpuFSDP(None).shard_reference(model, 8)
    assert isinstance(out, LogpsModel) and out.model is model and out.chunk == 8 and sharded == [out]
