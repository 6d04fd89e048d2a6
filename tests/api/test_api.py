"""`preftune.train` / `preftune.evaluate` from Python: in-memory data and models, no files, callbacks, the same numbers
as the command line, and eval taking β from the run it evaluates."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import yaml

import preftune
from preftune.cli import main
from preftune.errors import ConfigError, DataError

from ..training.helpers import TOY

SETTINGS = {"data": {"eval_fraction": 0}, "report": False,
            "train": {"shuffle": False, "batch_size": 4, "max_steps": 4, "learning_rate": 1e-3, "warmup_ratio": 0, "deterministic": True}}


def tiny_llama(tokenizer) -> torch.nn.Module:  # noqa: ANN001
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return LlamaForCausalLM(config)


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("kind", ["list", "dataset"])
def test_train_in_memory_from_records_writes_nothing_and_returns_the_trained_model(kind: str, smol_tokenizer, tmp_path: Path,
                                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("PREFTUNE_DATA_CACHE", str(tmp_path / "cache"))
    model = tiny_llama(smol_tokenizer)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    rows = TOY if kind == "list" else datasets.Dataset.from_list(TOY)
    result = preftune.train(SETTINGS, model=model, tokenizer=smol_tokenizer, train_data=rows, output_dir=None, progress=False)
    assert [h["step"] for h in result.history] == [1, 2, 3, 4] and all("loss" in h and "rewards/margins" in h for h in result.history)
    assert result.output_dir is None and result.paths == {} and result.steps == 4
    trained = result.model.state_dict()
    assert any(not torch.equal(trained[k], start[k]) for k in start), "the returned model's weights did not change"
    assert result.model is model  # trained in place, as the caller's object
    assert files_under(cwd) == []  # no run folder, no report, no checkpoint anywhere under the working directory
    assert not (tmp_path / "cache" / "reference").exists()


def test_records_are_validated_with_their_index(smol_tokenizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    bad = [*TOY[:5], {"prompt": "p", "chosen": "", "rejected": "x"}]
    with pytest.raises(DataError, match=r"train_data record 5"):
        preftune.train(SETTINGS, model=tiny_llama(smol_tokenizer), tokenizer=smol_tokenizer, train_data=bad, output_dir=None, progress=False)
    with pytest.raises(ConfigError, match="train.max_stepz: unknown key"):
        preftune.train(SETTINGS, overrides={"train.max_stepz": 3}, output_dir=None)


def test_a_callback_sees_every_step_and_can_stop_the_run(tiny_model_dir: Path, tmp_path: Path) -> None:
    class Recorder(preftune.Callback):
        def __init__(self) -> None:
            self.steps: list[int] = []
            self.evals: list[int] = []
            self.ended = None

        def on_step(self, step: int, metrics: dict) -> bool:
            self.steps.append(step)
            return step == 3  # ask to stop after step 3

        def on_evaluate(self, step: int, metrics: dict) -> None:
            assert "eval/rewards/margins" in metrics
            self.evals.append(step)

        def on_end(self, result) -> None:  # noqa: ANN001
            self.ended = result

    seen: list[tuple[int, float]] = []
    recorder = Recorder()
    cfg = {**SETTINGS, "model": {"name_or_path": str(tiny_model_dir)}, "data": {"eval_fraction": 0.2},
           "train": {**SETTINGS["train"], "max_steps": 8}}
    result = preftune.train(cfg, train_data=TOY, output_dir=None, progress=False,
                            callbacks=[recorder, lambda step, m: seen.append((step, m.get("loss", float("nan"))))])
    assert recorder.steps == [1, 2, 3] and result.steps == 3 and result.stop_reason == "callback" and result.stopped_early
    assert recorder.evals == [0, 3] and recorder.ended is result  # before training, and the final evaluation
    assert [s for s, loss in seen if loss == loss] == [1, 2, 3]  # the function saw each step's metrics (and the evaluations)
    assert [h["step"] for h in result.history if "loss" in h] == [1, 2, 3]


def test_the_cli_and_the_api_give_the_same_metrics(tiny_model_dir: Path, tmp_path: Path) -> None:
    from ..conftest import write_jsonl

    data = write_jsonl(tmp_path / "toy.jsonl", TOY)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({**SETTINGS, "model": {"name_or_path": str(tiny_model_dir)}, "data": {"train": str(data), "eval_fraction": 0.2},
                                      "output_dir": str(tmp_path / "cli")}))
    assert main(["train", str(config), "report=false"]) == 0
    cli = [json.loads(line) for line in (tmp_path / "cli" / "metrics.jsonl").read_text().splitlines()]
    api = preftune.train(str(config), output_dir=tmp_path / "api", progress=False).history
    assert len(cli) == len(api) == 6  # eval before, 4 steps, eval after
    for a, b in zip(cli, api):
        assert a.keys() == b.keys() and a["step"] == b["step"]
        for k, v in a.items():
            if k not in ("pairs_per_second", "tokens_per_second") and isinstance(v, float):
                assert b[k] == pytest.approx(v, rel=1e-6, abs=1e-7), k
    again = [json.loads(line) for line in (tmp_path / "api" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in again] == [m["step"] for m in cli]


def test_eval_of_a_run_reports_rewards_at_the_runs_beta(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ..conftest import write_jsonl

    held = write_jsonl(tmp_path / "held.jsonl", TOY[:8])
    run = tmp_path / "run"
    cfg = {**SETTINGS, "model": {"name_or_path": str(tiny_model_dir)}, "loss": {"beta": 0.3}, "train": {**SETTINGS["train"], "learning_rate": 5e-2}}
    preftune.train(cfg, train_data=TOY, output_dir=run, progress=False)
    assert main(["eval", "--model", str(run), "--data", str(held), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    p = result["preference"]
    assert result["beta"] == 0.3 and abs(p["logratios/chosen"]) > 1e-3
    assert p["rewards/chosen"] == pytest.approx(0.3 * p["logratios/chosen"], rel=1e-5)
    assert main(["eval", "--model", str(run), "--data", str(held), "--json", "--beta", "0.1"]) == 0
    other = json.loads(capsys.readouterr().out)
    assert other["beta"] == 0.1 and other["preference"]["rewards/chosen"] == pytest.approx(0.1 * p["logratios/chosen"], rel=1e-5)
    # the Python entry point gives the same numbers, and writes nothing unless asked
    same = preftune.evaluate(run, str(held))
    assert same["preference"]["rewards/chosen"] == pytest.approx(p["rewards/chosen"], rel=1e-6) and "files" not in same


def test_readme_python_example_runs(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## From Python\n", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert "smollm2-135m-instruct" in code
    guide = (Path(__file__).resolve().parents[2] / "docs" / "getting-started.md").read_text(encoding="utf-8")
    assert f"```python\n{code}```" in guide  # the getting-started page shows the same, tested, example
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    exec(compile(code.replace("smollm2-135m-instruct", str(tiny_model_dir)), "README.md", "exec"), {"__name__": "readme"})  # noqa: S102
    out = capsys.readouterr().out
    assert "loss by step: [0.69" in out and "held-in accuracy:" in out
    assert not os.listdir(cwd)


def test_the_guides_pipeline_in_python_runs(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """The training guide's SFT -> DPO / KTO -> GGUF block, with the tiny model and a small pairs file in place of the
    embedded model and HH; the chained runs start from (and are referenced against) the SFT run's model."""
    from ..conftest import write_jsonl

    guide = (Path(__file__).resolve().parents[2] / "docs" / "training.md").read_text(encoding="utf-8")
    section = guide.split("\n## The pipeline: SFT, then DPO against the SFT model, then export\n", 1)[1].split("\n## ", 1)[0]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    hh = "hh-rlhf-harmless/train.jsonl"
    assert "smollm2-135m-instruct" in code and hh in code and "export_model" in code and '"loss.name": "kto"' in code
    data = write_jsonl(tmp_path / "pairs.jsonl", TOY)
    monkeypatch.chdir(tmp_path)
    code = code.replace("smollm2-135m-instruct", str(tiny_model_dir)).replace(hh, str(data)).replace('"max_steps": 20', '"max_steps": 4')
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})  # noqa: S102
    out = capsys.readouterr().out
    assert "held-out margin, DPO:" in out and "KTO:" in out and (tmp_path / "dpo.gguf").stat().st_size > 10_000
    for run in ("dpo", "kto"):
        config = yaml.safe_load((tmp_path / "runs" / run / "config.yaml").read_text())
        assert config["model"]["name_or_path"] == "runs/sft"  # relative to the working folder, as given
