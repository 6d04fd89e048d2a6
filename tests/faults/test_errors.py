"""Each way a user can point a command at the wrong thing ends in exit status 2 and a message that names the file,
flag or key and the fix: never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from preftune.cli import main
from preftune.config import load_config
from preftune.errors import ConfigError, PreftuneError

from ..conftest import shared_file, write_jsonl
from ..training.helpers import TOY, tiny_config


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    out = capsys.readouterr()
    text = out.out + out.err
    assert "Traceback" not in text and "internal error" not in text, text
    return code, text


@pytest.mark.parametrize("loss,params,message", [
    ("robust", "{label_smoothing: 0.5}", "params.label_smoothing = 0.5 must be in [0, 0.5)"),
    ("cdpo", "{label_smoothing: -0.1}", "params.label_smoothing = -0.1 must be in [0, 0.5]"),
    ("ipo", "{normalize: mean}", "params.normalize = 'mean' must be one of ['tokens', 'sum']"),
    ("dpop", "{lambda_: fifty}", "params.lambda_ = 'fifty' must be a finite number in [0, inf)"),
    ("dpop", "{lambda_: .nan}", "params.lambda_ = nan must be a finite number"),
    ("rpo", "{alpha: true}", "params.alpha = True must be a finite number"),
    ("exo_pair", "{label_smoothing: 0}", "params.label_smoothing = 0 must be in (0, 1)"),
    ("discopop", "{tau: 0}", "params.tau = 0 must be in (0, inf)"),
    ("simpo", "{gamma_beta_ratio: -1}", "params.gamma_beta_ratio = -1 must be in [0, inf)"),
    ("kto", "{undesirable_weight: 0}", "params.undesirable_weight = 0 must be in (0, inf)"),
])
def test_loss_parameters_are_checked_when_the_config_loads(loss: str, params: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(None, [f"loss.name={loss}", f"loss.params={params}"])
    assert message in str(e.value)


@pytest.mark.parametrize("flags,named", [(["--batch-size", "0"], "--batch-size"), (["--batch-size", "-1"], "--batch-size"),
                                         (["--max-pairs", "-3"], "--max-pairs"), (["--max-pairs", "0"], "--max-pairs"),
                                         (["--beta", "0"], "--beta"), (["--beta", "-0.5"], "--beta"), (["--beta", "nan"], "--beta")])
def test_eval_flags_out_of_range_are_refused_before_anything_loads(flags: list[str], named: str, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, text = run_cli(["eval", "--model", str(tmp_path / "never-loaded"), "--data", "x.jsonl", *flags], capsys)
    assert code == 2 and named in text and "never-loaded" not in text


def test_a_folder_or_unreadable_file_as_config(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code, text = run_cli(["train", str(tmp_path)], capsys)
    assert code == 2 and f"{tmp_path}: a folder, not a config file" in text
    config = tmp_path / "c.yaml"
    config.write_text("train: {max_steps: 1}\n")

    def denied(self: Path, *args: object, **kwargs: object) -> str:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_text", denied)
    code, text = run_cli(["train", str(config)], capsys)
    assert code == 2 and f"{config}: cannot be read (Permission denied)" in text


@pytest.mark.parametrize("content,message", [(None, "GGUF file not found"), (b"hello", "not a GGUF file"),
                                             (b"GGUF\x03\x00\x00\x00" + b"\x07" * 40, "cannot read this GGUF file")])
def test_missing_foreign_and_truncated_gguf(content: bytes | None, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "model.gguf"
    if content is not None:
        path.write_bytes(content)
    code, text = run_cli(["export", str(path), "--to", "hf", "-o", str(tmp_path / "out")], capsys)
    assert code == 2 and str(path) in text and message in text and "Fix:" in text


def test_damaged_run_folders_for_report_and_eval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 0.5}\n')
    (run / "config.yaml").write_text("loss: {name: [dpo\n")
    code, text = run_cli(["report", str(run)], capsys)
    assert code == 2 and f"{run / 'config.yaml'}: line 2: not valid YAML" in text
    (run / "config.yaml").write_text("loss: {name: dpo}\n")
    (run / "summary.json").write_text('{"steps": ')
    code, text = run_cli(["report", str(run)], capsys)
    assert code == 2 and f"{run / 'summary.json'}: line 1: not valid JSON" in text
    (run / "summary.json").unlink()
    (run / "metrics.jsonl").write_text('{"step": "x", "loss": "y"}\n[1]\n{"step": 1, "loss": 0.5}\n{"step": 2, "lo')  # odd rows are passed over
    code, text = run_cli(["report", str(run)], capsys)
    assert code == 0 and (run / "report.html").exists()
    data = write_jsonl(tmp_path / "pairs.jsonl", TOY[:4])
    code, text = run_cli(["eval", "--model", str(run), "--data", str(data)], capsys)
    assert code == 2 and "cannot load the model" in text and "Fix:" in text


def test_an_output_folder_that_cannot_be_written(tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, text = run_cli(["train", f"model.name_or_path={tiny_model_dir}", f"output_dir={blocker / 'run'}"], capsys)
    assert code == 2 and f"output_dir {blocker / 'run'}: not writable" in text
    data = write_jsonl(tmp_path / "pairs.jsonl", TOY[:4])
    code, text = run_cli(["eval", "--model", str(tiny_model_dir), "--data", str(data), "--output-dir", str(blocker / "eval")], capsys)
    assert code == 2 and f"output_dir (--output-dir) {blocker / 'eval'}: not writable" in text
    code, text = run_cli(["export", str(tiny_model_dir), "--to", "hf", "-o", str(blocker / "x" / "out")], capsys)
    assert code == 2 and "not writable" in text


def test_a_reference_with_another_vocabulary_is_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    from preftune.training.run import train

    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.vocab_size += 64
    other = tmp_path / "other-vocab"
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(other)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(other)
    with pytest.raises(PreftuneError, match=r"reference.name_or_path = .*other-vocab: its vocabulary has \d+ tokens, the policy's \d+"):
        train(tiny_config(tmp_path, tiny_model_dir, "reference.strategy=separate", f"reference.name_or_path={other}"), show_progress=False)


def test_judges_that_fail_to_import_and_a_pairwise_judge_in_iterate(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken_judge.py").write_text("import math\nraise ValueError('no API key set')\n")
    (tmp_path / "pair_judge.py").write_text("def compare(prompt, a, b):\n    return 0.5\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    data = write_jsonl(tmp_path / "pairs.jsonl", TOY[:4])
    code, text = run_cli(["eval", "--model", str(tmp_path / "m"), "--data", str(data), "--judge", "broken_judge:score"], capsys)
    assert code == 2 and "importing module 'broken_judge' failed (ValueError: no API key set)" in text
    code, text = run_cli(["iterate", f"output_dir={tmp_path / 'it'}", "iterate.judge.name=pair_judge:compare"], capsys)
    assert code == 2 and "iterate.judge.name = pair_judge:compare: a pairwise judge" in text and "reward judge" in text


def test_data_inspect_reports_bad_records_instead_of_stopping(capsys: pytest.CaptureFixture[str]) -> None:
    hh = shared_file("hh-rlhf-harmless", "train.jsonl")
    code, text = run_cli(["data", "inspect", str(hh)], capsys)
    assert code == 0
    assert "bad records: 4 (empty text: 4)" in text and text.count("field 'chosen' empty text") + text.count("field 'rejected' empty text") == 4
    assert "lengths (characters):" in text and "length bias:" in text and "examples kept: 1796" in text
    code, text = run_cli(["data", "inspect", str(hh), "--json"], capsys)
    report = json.loads(text)
    assert code == 0 and report["errors_by_kind"] == {"empty text": 4} and len(report["bad_records"]) == 4 and report["length_bias"]


def test_the_free_space_check_uses_the_runs_checkpoint_size(tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from preftune.models.loading import load_model
    from preftune.training.checkpoint import checkpoint_bytes
    from preftune.training.setup import space_needed

    cfg = tiny_config(tmp_path, tiny_model_dir, "train.save_every=1", "train.save_total_limit=2")
    model = load_model(cfg.model)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    assert checkpoint_bytes(model) == 3 * weights  # weights and AdamW's two moments
    assert space_needed(model, cfg, total_steps=4) == 3 * weights * 3 + weights + 16 * 2**20  # 2 kept + 1 being written, the final model
    lora = load_model(tiny_config(tmp_path, tiny_model_dir, "model.lora.enabled=true").model)
    assert checkpoint_bytes(lora) < checkpoint_bytes(model) / 10  # an adapter's checkpoint is small
    need = space_needed(model, cfg, 4)
    real = shutil.disk_usage

    def tight(path: object) -> object:
        usage = real(path)
        return type(usage)(usage.total, usage.total - need + 1, need - 1)

    monkeypatch.setattr(shutil, "disk_usage", tight)
    from preftune.training.run import train

    with pytest.raises(PreftuneError, match=rf"MiB free, but this run writes up to about {need / 2**20:.0f} MiB"):
        train(cfg, show_progress=False)


@pytest.mark.parametrize(("old", "new", "value"), [("model.attention", "experimental.attention", "segments"),
                                                   ("train.compile", "experimental.compile", "true"),
                                                   ("train.static_shapes", "experimental.static_shapes", "true"),
                                                   ("train.compile_backend", "experimental.compile_backend", "aot_eager"),
                                                   ("train.compile_mode", "experimental.compile_mode", "reduce-overhead")])
def test_a_key_moved_to_experimental_names_its_new_place(old: str, new: str, value: str) -> None:
    from preftune.config import load_config

    with pytest.raises(ConfigError, match=f"{old} is now {new}. Fix: write {new}: "):
        load_config(None, [f"{old}={value}"])
    section, key = new.split(".")
    assert str(getattr(getattr(load_config(None, [f"{new}={value}", "experimental.compile=true", "experimental.static_shapes=true"]), section), key)).lower() == value
