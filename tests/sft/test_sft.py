"""The SFT stage: TRL's SFT formats, the token-mean NLL of completions computed through the packed layouts, and the
chain SFT -> DPO with the SFT model as the start and the reference."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import preftune
from preftune.cli import main
from preftune.config import DataConfig
from preftune.data.batch import collate
from preftune.data.pipeline import load_examples
from preftune.data.records import UnpairedExample
from preftune.data.tokenize import PairTokenizer, TokenizedPair
from preftune.errors import DataError
from preftune.models.logprobs import sequence_logps

from ..conftest import write_jsonl
from ..training.helpers import TOY

MESSAGES = [{"messages": [{"role": "user", "content": f"What is {a} + {b}?"}, {"role": "assistant", "content": f"{a} + {b} = {a + b}"}]}
            for a in range(8) for b in range(3)]
SETTINGS = {"report": False, "data": {"eval_fraction": 0}, "train": {"shuffle": False, "warmup_ratio": 0, "deterministic": True}}


def load(tmp_path: Path, rows: list[dict]) -> list:
    return load_examples(str(write_jsonl(tmp_path / "d.jsonl", rows)), DataConfig().load_settings()).examples


def test_trl_sft_formats_become_desirable_completions(tmp_path: Path) -> None:
    text = load(tmp_path, [{"text": "Once upon a time."}])[0]
    assert text == UnpairedExample("", "Once upon a time.", True, source=text.source)
    msgs = load(tmp_path, MESSAGES[:1])[0]
    assert msgs.prompt == MESSAGES[0]["messages"][:1] and msgs.completion == MESSAGES[0]["messages"][1:] and msgs.label
    pc = load(tmp_path, [{"prompt": "2 + 2 =", "completion": " 4"}])[0]
    assert (pc.prompt, pc.completion, pc.label) == ("2 + 2 =", " 4", True)
    with pytest.raises(DataError, match=r"d.jsonl:1: field 'messages' no completion: the last message is from 'user'"):
        load(tmp_path, [{"messages": [{"role": "assistant", "content": "hi"}, {"role": "user", "content": "bye"}]}])


@pytest.mark.parametrize("layout", ["padded", "prefix_shared", "packed"])
def test_completion_log_probs_with_no_rejected_match_a_plain_forward(layout: str, tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    pairs = [TokenizedPair([1, 5, 7], [9, 2], []), TokenizedPair([3] * 6, [6, 8, 4, 2], []), TokenizedPair([4], [5], [])]
    out = sequence_logps(model, collate(layout, pairs, [0, 1, 2], 0, 16), 8).chosen(3)
    for i, p in enumerate(pairs):
        ids = torch.tensor([p.prompt + p.chosen])
        with torch.no_grad():
            lp = model(input_ids=ids).logits[0].double().log_softmax(-1)
        want = sum(lp[len(p.prompt) - 1 + j, t].item() for j, t in enumerate(p.chosen))
        assert out[i].item() == pytest.approx(want, rel=1e-5)


def test_sft_step_one_is_the_token_mean_nll_of_the_completions(tiny_model_dir: Path, smol_tokenizer) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    tok = PairTokenizer(smol_tokenizer, DataConfig().tokenize_settings())
    rows = MESSAGES[:8]
    examples = [UnpairedExample(r["messages"][:1], r["messages"][1:], True) for r in rows]
    nll = hits = tokens = 0.0
    for ex in examples:
        p = tok.unpaired(ex)
        ids = torch.tensor([p.prompt + p.chosen])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0].double()
        pos = torch.arange(len(p.prompt) - 1, len(p.prompt) - 1 + len(p.chosen))
        labels = torch.tensor(p.chosen)
        nll -= logits.log_softmax(-1)[pos, labels].sum().item()
        hits += (logits[pos].argmax(-1) == labels).sum().item()
        tokens += len(p.chosen)
    cfg = {**SETTINGS, "model": {"name_or_path": str(tiny_model_dir)}, "train": {**SETTINGS["train"], "batch_size": 8, "max_steps": 1}}
    step = preftune.sft(cfg, train_data=rows, output_dir=None, progress=False).history[0]
    assert step["loss"] == pytest.approx(nll / tokens, rel=1e-5)
    assert step["mean_token_accuracy"] == pytest.approx(hits / tokens) and step["num_completion_tokens"] == tokens
    assert step["perplexity"] == pytest.approx(math.exp(nll / tokens), rel=1e-5)
    every = preftune.sft(cfg, overrides={"sft.completion_only_loss": False}, train_data=rows, output_dir=None, progress=False).history[0]
    assert every["num_completion_tokens"] > tokens  # the prompt's tokens count too


def test_sft_lowers_the_held_out_loss_and_preference_data_gives_its_chosen(tiny_model_dir: Path, tmp_path: Path) -> None:
    cfg = {**SETTINGS, "model": {"name_or_path": str(tiny_model_dir)}, "data": {"eval_fraction": 0.25},
           "train": {**SETTINGS["train"], "batch_size": 4, "max_steps": 8, "learning_rate": 1e-2}}
    result = preftune.sft(cfg, train_data=TOY, output_dir=None, progress=False)
    assert result.after["eval/loss"] < result.before["eval/loss"] - 1.0
    assert "rewards/margins" not in result.history[0] and result.findings == []


def test_dpo_refuses_sft_data_and_the_chain_starts_from_the_sft_model(tiny_model_dir: Path, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    sft_data = write_jsonl(tmp_path / "sft.jsonl", MESSAGES)
    pairs = write_jsonl(tmp_path / "pairs.jsonl", TOY)
    base = [f"model.name_or_path={tiny_model_dir}", "report=false", "train.max_steps=3", "train.batch_size=4", "train.learning_rate=1e-2"]
    assert main(["train", *base, f"data.train={sft_data}", f"output_dir={tmp_path / 'x'}"]) == 2
    err = capsys.readouterr().err
    assert "messages data holds single completions" in err and "preftune sft" in err
    assert main(["sft", *base, f"data.train={sft_data}", "data.eval_fraction=0.25", f"output_dir={tmp_path / 'sft'}"]) == 0
    dpo = preftune.train(None, overrides=[*base[1:], f"model.name_or_path={tmp_path / 'sft'}", f"data.train={pairs}", "data.eval_fraction=0.2",
                                          "train.max_steps=1"], output_dir=None, progress=False)
    assert dpo.history[1]["loss"] == pytest.approx(math.log(2), abs=1e-6) and dpo.before["eval/rewards/margins"] == 0.0
    from_base = preftune.train(None, overrides=[*base[1:], f"model.name_or_path={tiny_model_dir}", f"data.train={pairs}", "data.eval_fraction=0.2",
                                                "train.max_steps=1"], output_dir=None, progress=False)
    assert dpo.before["eval/logps/chosen"] != pytest.approx(from_base.before["eval/logps/chosen"], rel=1e-3)  # it starts from the SFT model
