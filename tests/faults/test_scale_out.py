"""Two processes through `accelerate launch` on CPU (gloo): same losses as one process with the same global batch,
metrics reduced across ranks and written once, a two-process checkpoint resumable with one process, each rank's
reference log-probs merged into one cache; FSDP on two CPU processes (torch's fully_shard) equal to one process, with a
checkpoint that resumes; DeepSpeed ZeRO-2 on two CPU processes the same; and the shipped accelerate configs parse."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from ..training.helpers import toy_data
from .runner import env, metrics

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "accelerate"


def config(folder: Path, model_dir: Path, data: Path, name: str, batch_size: int, **extra: object) -> Path:
    cfg = {"model": {"name_or_path": str(model_dir)}, "data": {"train": str(data), "eval_fraction": 0.2, "cache_dir": str(folder / "tok")},
           "train": {"batch_size": batch_size, "max_steps": 4, "learning_rate": 1e-3, "warmup_ratio": 0.0, "deterministic": True,
                     "eval_every": 2, "save_every": 2, "save_total_limit": 5, "layout": "padded", **extra.pop("train", {})},
           "reference": {"strategy": "precomputed", "cache_dir": str(folder / f"ref-{name}")}, "report": False, "output_dir": str(folder / name), **extra}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run(cmd: list[str], log: Path) -> None:
    proc = subprocess.run(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env(), timeout=600)
    assert proc.returncode == 0, log.read_text()[-4000:]


def launch_two(cfg: Path, log: Path) -> None:
    # accelerate's launcher as a module of this interpreter: no dependence on a console script on PATH
    run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(EXAMPLES / "cpu_2proc.yaml"), "-m", "preftune.cli", "train", str(cfg)], log)


def losses(out: Path, key: str = "loss") -> dict[int, float]:
    return {m["step"]: m[key] for m in metrics(out) if key in m}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, Path]:
    """A one-process run with batch 4, the same config on two processes with batch 2 each, and a one-process resume
    of the two-process run's step-2 checkpoint."""
    tmp = tmp_path_factory.mktemp("scale")
    data = toy_data(tmp)
    one = config(tmp, tiny_model_dir, data, "one", 4)
    two = config(tmp, tiny_model_dir, data, "two", 2, train={"eval_every": 2})
    run([sys.executable, "-m", "preftune.cli", "train", str(one)], tmp / "one.log")
    launch_two(two, tmp / "two.log")
    resumed = config(tmp, tiny_model_dir, data, "resumed", 4, resume_from=str(tmp / "two" / "checkpoint-2"))
    run([sys.executable, "-m", "preftune.cli", "train", str(resumed)], tmp / "resumed.log")
    return {"one": tmp / "one", "two": tmp / "two", "resumed": tmp / "resumed", "log": tmp / "two.log"}


def test_two_processes_match_one(runs: dict[str, Path]) -> None:
    one, two = losses(runs["one"]), losses(runs["two"])
    assert sorted(one) == sorted(two) == [1, 2, 3, 4]
    assert all(abs(one[s] - two[s]) <= 1e-5 for s in one), (one, two)
    # held-out metrics are means over every held-out pair, reduced across ranks, at every evaluation (0, 2, 4)
    eval_one, eval_two = losses(runs["one"], "eval/loss"), losses(runs["two"], "eval/loss")
    assert sorted(eval_one) == sorted(eval_two) == [0, 2, 4]
    assert all(abs(eval_one[s] - eval_two[s]) <= 1e-5 for s in eval_one), (eval_one, eval_two)
    assert losses(runs["two"], "num_pairs") == {1: 4.0, 2: 4.0, 3: 4.0, 4: 4.0}  # both ranks' pairs counted


def test_only_rank_zero_writes(runs: dict[str, Path]) -> None:
    rows = metrics(runs["two"])
    assert len([m for m in rows if "loss" in m]) == 4  # not 8
    summary = json.loads((runs["two"] / "summary.json").read_text())
    assert summary["steps"] == 4 and isinstance(summary["diagnostics"], list)
    assert sorted(p.name for p in runs["two"].glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]


def test_each_rank_computes_its_own_reference_pairs_into_one_table(runs: dict[str, Path]) -> None:
    from safetensors.torch import load_file

    tables = sorted((load_file(str(p)) for p in (runs["two"].parent / "ref-two").glob("*.safetensors")), key=lambda t: t["chosen"].numel())
    assert [t["chosen"].numel() for t in tables] == [8, 32]  # held-out and train splits, one file each for both ranks
    held_out, train = (int((~t["chosen"].isnan() & ~t["rejected"].isnan()).sum()) for t in tables)
    assert held_out == 8  # every held-out pair, half from each rank (4 + 4 per rank would be only 4 if one rank's were lost)
    assert train == 16  # 4 steps × 2 ranks × 2 pairs: what the run used, merged from both ranks, and nothing else


def test_two_process_checkpoint_resumes_on_one(runs: dict[str, Path]) -> None:
    two, resumed = losses(runs["two"]), losses(runs["resumed"])
    assert sorted(resumed) == [3, 4]  # a new output folder: its log starts after the checkpoint
    assert all(abs(two[s] - resumed[s]) <= 1e-5 for s in (3, 4)), (two, resumed)


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_accelerate_configs_parse(name: str) -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(EXAMPLES / name))
    assert cfg.num_processes >= 2 and cfg.num_machines >= 1
    if "fsdp" in name:
        assert cfg.distributed_type == "FSDP" and cfg.fsdp_config["fsdp_reshard_after_forward"] is True
    if "zero" in name:
        assert cfg.distributed_type == "DEEPSPEED" and cfg.deepspeed_config["zero_stage"] == int(name.split("zero")[1][0])


# ---------------------------------------------------------------- FSDP on two CPU processes

def launch_with(accelerate_config: str) -> Callable[[Path, Path], None]:
    def launch(cfg: Path, log: Path) -> None:
        run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(EXAMPLES / accelerate_config), "-m", "preftune.cli", "train",
             str(cfg)], log)
    return launch


def sharded_runs(tmp: Path, model_dir: Path, accelerate_config: str, name: str) -> dict[str, Path]:
    """Full fine-tuning with a separate reference: one process with batch 4; `accelerate_config`'s two processes with
    batch 2 each (run `name`); that run resumed from its step-2 checkpoint, again on two processes."""
    data, launch = toy_data(tmp), launch_with(accelerate_config)
    sep = {"reference": {"strategy": "separate"}}
    run([sys.executable, "-m", "preftune.cli", "train", str(config(tmp, model_dir, data, "one", 4, **sep))], tmp / "one.log")
    launch(config(tmp, model_dir, data, name, 2, **sep), tmp / f"{name}.log")
    launch(config(tmp, model_dir, data, "resumed", 2, resume_from=str(tmp / name / "checkpoint-2"), **sep), tmp / "resumed.log")
    return {"one": tmp / "one", name: tmp / name, "resumed": tmp / "resumed", "log": tmp / f"{name}.log"}


@pytest.fixture(scope="module")
def fsdp_runs(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, Path]:
    return sharded_runs(tmp_path_factory.mktemp("fsdp"), tiny_model_dir, "fsdp_cpu_2proc.yaml", "fsdp")


def test_fsdp_on_two_cpu_processes_shards_and_matches_one_process(fsdp_runs: dict[str, Path]) -> None:
    from safetensors.torch import load_file

    assert "FSDP on 2 CPU processes: torch's fully_shard" in fsdp_runs["log"].read_text()  # not accelerate's silent DDP fallback
    for key in ("loss", "eval/loss"):
        one, fsdp = losses(fsdp_runs["one"], key), losses(fsdp_runs["fsdp"], key)
        assert sorted(one) == sorted(fsdp) and len(one) >= 3
        assert all(abs(one[s] - fsdp[s]) <= 1e-5 for s in one), (key, one, fsdp)
    assert losses(fsdp_runs["one"])[4] < losses(fsdp_runs["one"])[1]  # it learned, so equal losses mean equal updates
    a = load_file(str(fsdp_runs["one"] / "model" / "model.safetensors"))
    b = load_file(str(fsdp_runs["fsdp"] / "model" / "model.safetensors"))  # gathered from both shards
    assert sorted(a) == sorted(b) and all((a[k] - b[k]).abs().max() <= 1e-5 for k in a)


def test_fsdp_checkpoint_resumes(fsdp_runs: dict[str, Path]) -> None:
    whole, resumed = losses(fsdp_runs["fsdp"]), losses(fsdp_runs["resumed"])
    assert sorted(resumed) == [3, 4]
    assert all(abs(whole[s] - resumed[s]) <= 1e-5 for s in (3, 4)), (whole, resumed)


def test_cpu_fsdp_refuses_a_reference_it_cannot_gather(tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from preftune.errors import ConfigError
    from preftune.training import sharding
    from preftune.training.setup import setup_run

    from ..training.helpers import tiny_config

    class Accelerator:
        distributed_type = "MULTI_CPU"

    assert not sharding.cpu_fsdp(Accelerator())
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert sharding.cpu_fsdp(Accelerator())
    monkeypatch.setattr(sharding, "cpu_fsdp", lambda accelerator: True)
    with pytest.raises(ConfigError, match="reference.strategy: separate"):
        setup_run(tiny_config(tmp_path, tiny_model_dir, "model.lora.enabled=true", "reference.strategy=adapter_disabled"))


# ---------------------------------------------------------------- DeepSpeed ZeRO-2 on two CPU processes

@pytest.fixture(scope="module")
def deepspeed_runs(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, Path]:
    pytest.importorskip("deepspeed")
    return sharded_runs(tmp_path_factory.mktemp("deepspeed"), tiny_model_dir, "deepspeed_zero2_cpu_2proc.yaml", "zero2")


def test_deepspeed_zero2_on_two_cpu_processes_matches_one_process(deepspeed_runs: dict[str, Path]) -> None:
    from safetensors.torch import load_file

    log = deepspeed_runs["log"].read_text()
    assert "DeepSpeed ZeRO stage 2 on 2 processes" in log
    for key in ("loss", "eval/loss", "grad_norm"):
        one, zero2 = losses(deepspeed_runs["one"], key), losses(deepspeed_runs["zero2"], key)
        assert sorted(one) == sorted(zero2) and len(one) >= 3
        assert all(abs(one[s] - zero2[s]) <= 1e-5 for s in one), (key, one, zero2)
    assert losses(deepspeed_runs["one"])[4] < losses(deepspeed_runs["one"])[1]  # it learned, so equal losses mean equal updates
    a = load_file(str(deepspeed_runs["one"] / "model" / "model.safetensors"))
    b = load_file(str(deepspeed_runs["zero2"] / "model" / "model.safetensors"))
    assert sorted(a) == sorted(b) and all((a[k] - b[k]).abs().max() <= 1e-5 for k in a)


def test_deepspeed_checkpoint_resumes(deepspeed_runs: dict[str, Path]) -> None:
    whole, resumed = losses(deepspeed_runs["zero2"]), losses(deepspeed_runs["resumed"])
    assert sorted(resumed) == [3, 4]
    assert all(abs(whole[s] - resumed[s]) <= 1e-5 for s in (3, 4)), (whole, resumed)
