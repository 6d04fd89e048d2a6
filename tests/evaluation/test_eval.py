"""`preftune eval`: preference metrics, the reference it picks, generation, KL estimate, judges, the CLI's JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from preftune.cli import main
from preftune.config import GenerationConfig, JudgeConfig, RunConfig
from preftune.data.tokenize import TokenizedPair
from preftune.errors import JudgeError
from preftune.evaluation.generation import decode_usage, sampled_kl, sample_lengths
from preftune.stats import mean_stderr
from preftune.models.generate import Sample, filter_logits, generate, sample_tokens
from preftune.evaluation.judging import load_judge, win_rate
from preftune.evaluation.models import load_eval_models
from preftune.evaluation.preference import preference_summary
from preftune.evaluation.run import sample_pairs, score_pairs
from preftune.config import LossConfig
from preftune.models.logprobs import SequenceLogps
from preftune.scoring.metrics import pair_metrics
from preftune.scoring.batches import LossFunction
from preftune.training.run import train

from ..conftest import write_jsonl
from ..training.helpers import tiny_config, toy_data

J = "tests.evaluation.judges_for_tests"


def t(*v: float) -> torch.Tensor:
    return torch.tensor(v, dtype=torch.float64)


# ------------------------------------------------------------------ pure metrics

def scored(pc: torch.Tensor, pr: torch.Tensor, rc: torch.Tensor | None, rr: torch.Tensor | None, beta: float) -> dict[str, torch.Tensor]:
    """Per-pair values as training's scoring path makes them (the loss's rewards, `pair_metrics`)."""
    b = pc.numel()
    policy = SequenceLogps(torch.cat([pc, pr]), torch.zeros(2 * b, dtype=torch.float64))
    ref = None if rc is None or rr is None else (rc, rr)
    loss = LossFunction.from_config(LossConfig(), beta=beta, reference_free=None if ref is not None else True)
    values = pair_metrics(loss(policy, ref, torch.ones(2 * b), b), policy, b)
    if ref is not None:
        values["ref_logps/chosen"], values["ref_logps/rejected"] = rc, rr
    return values


def test_preference_summary_counts_ties_half_and_splits_by_length() -> None:
    values = scored(t(-1, -2, -3, -4), t(-2, -2, -1, -5), t(0, 0, 0, 0), t(0, 0, 0, 0), beta=0.5)
    out = preference_summary(values, t(10, 10, 5, 20), t(5, 10, 10, 10))
    # margins (β·Δ): +0.5, 0 (tie), -1.0, +0.5 -> accuracy (1 + 0.5 + 0 + 1) / 4
    assert out["rewards/accuracies"] == pytest.approx(0.625)
    assert out["rewards/margins"] == pytest.approx((0.5 + 0 - 1.0 + 0.5) / 4)
    assert out["logratios/chosen"] == pytest.approx(-2.5)
    by = out["by_length"]
    assert (by["chosen_longer"]["pairs"], by["similar_length"]["pairs"], by["chosen_shorter"]["pairs"]) == (2, 1, 1)
    assert by["chosen_longer"]["rewards/accuracies"] == 1.0 and by["chosen_shorter"]["rewards/accuracies"] == 0.0
    # pairs of different length: 0 (chosen longer, preferred), 2 (chosen shorter, rejected preferred), 3 (chosen longer, preferred)
    assert out["prefers_longer"] == pytest.approx(1.0)
    assert out["margin_length_correlation"] > 0.9


def test_preference_summary_without_reference_uses_own_logps() -> None:
    out = preference_summary(scored(t(-1, -5), t(-3, -2), None, None, beta=0.1), t(2, 2), t(2, 2))
    assert out["rewards/accuracies"] == 0.5 and "logratios/chosen" not in out
    assert out["rewards/chosen"] == pytest.approx(0.1 * -3)


def test_sampled_kl_and_sample_lengths() -> None:
    gen = GenerationConfig()
    kl = sampled_kl(t(-1, -2, -3), t(-2, -2, -5), gen)
    assert kl["estimate"] == pytest.approx(1.0) and "note" not in kl
    assert "note" in sampled_kl(t(-1), t(-1), GenerationConfig(temperature=0.7))
    st = sample_lengths([Sample(0, 0, [1, 2, 3], True), Sample(0, 1, [1], False)])
    assert st["mean"] == 2 and st["max"] == 3 and st["truncated_fraction"] == 0.5


def test_decode_usage_counts_rows_waiting_on_the_longest() -> None:
    # two prompts a batch, two samples each: batch 0 runs 4 steps for 4 rows (16 row-steps, 4+1+2+1 = 8 used);
    # batch 1 (prompt 2) runs 3 steps for 2 rows (6 row-steps, 3+3 used)
    samples = [Sample(0, 0, [1] * 4, True), Sample(0, 1, [1], True), Sample(1, 0, [1] * 2, True), Sample(1, 1, [1], True),
               Sample(2, 0, [1] * 3, False), Sample(2, 1, [1] * 3, True)]
    u = decode_usage(samples, 2, 2.0)
    assert (u["tokens"], u["row_steps"], u["tokens_per_s"]) == (14, 22, 7.0)
    assert u["idle_row_share"] == pytest.approx(1 - 14 / 22)
    assert math.isnan(decode_usage(samples, 2, 0.0)["tokens_per_s"]) and math.isnan(decode_usage([], 2, 1.0)["idle_row_share"])


def test_mean_stderr() -> None:
    mean, se = mean_stderr([1.0, 0.0, 0.0, 1.0])
    assert mean == 0.5 and se == pytest.approx(math.sqrt(1 / 3) / 2)
    assert math.isnan(mean_stderr([2.0])[1]) and mean_stderr([2.0])[0] == 2.0 and math.isnan(mean_stderr([])[0])


def test_sample_pairs_cover_every_sample_once() -> None:
    samples = [Sample(0, 0, [1], True), Sample(0, 1, [2], True), Sample(0, 2, [3], True), Sample(1, 0, [4], True)]
    pairs, slots = sample_pairs([[9], [8]], samples)
    assert slots == [(0, 1), (2, 2), (3, 3)]
    assert pairs[1] == TokenizedPair([9], [3], [3]) and pairs[2].prompt == [8]


# ------------------------------------------------------------------ models: log-probs, reference choice, generation

def manual_logp(model: torch.nn.Module, prompt: list[int], response: list[int]) -> float:
    ids = torch.tensor([prompt + response])
    with torch.no_grad():
        logits = model(input_ids=ids).logits.double().log_softmax(-1)
    return sum(logits[0, len(prompt) - 1 + i, tok].item() for i, tok in enumerate(response))


def test_pair_logps_match_a_plain_forward(tiny_model_dir: Path) -> None:
    models = load_eval_models(str(tiny_model_dir), None)
    pairs = [TokenizedPair([1, 5, 7], [9, 2], [4, 4, 4, 2]), TokenizedPair([3] * 9, [6, 2], [8, 2])]
    v = score_pairs(models, pairs, LossFunction.from_config(LossConfig(), reference_free=True), 2, 64, "cpu", "test", False)
    c, r = v["logps/chosen"], v["logps/rejected"]
    for i, p in enumerate(pairs):
        assert c[i].item() == pytest.approx(manual_logp(models.policy, p.prompt, p.chosen), rel=1e-5)
        assert r[i].item() == pytest.approx(manual_logp(models.policy, p.prompt, p.rejected), rel=1e-5)


def test_greedy_generation_is_the_same_alone_and_in_a_left_padded_batch(tiny_model_dir: Path) -> None:
    models = load_eval_models(str(tiny_model_dir), None)
    greedy = GenerationConfig(do_sample=False, max_new_tokens=6, batch_size=4)
    short, long = [1, 20, 30], [1, 5, 6, 7, 8, 9, 10, 11]
    alone = generate(models.policy, models.tokenizer, [short], greedy)
    batched = generate(models.policy, models.tokenizer, [long, short], greedy)
    assert alone[0].ids == batched[1].ids
    # and greedy means argmax at each step
    ids = list(short)
    for tok in alone[0].ids:
        with torch.no_grad():
            nxt = models.policy(input_ids=torch.tensor([ids])).logits[0, -1].argmax().item()
        assert nxt == tok
        ids.append(tok)


def test_sampling_is_seeded(tiny_model_dir: Path) -> None:
    models = load_eval_models(str(tiny_model_dir), None)
    gen = GenerationConfig(max_new_tokens=5, num_samples=3, seed=3)
    a = generate(models.policy, models.tokenizer, [[1, 2, 3], [4, 5]], gen)
    b = generate(models.policy, models.tokenizer, [[1, 2, 3], [4, 5]], gen)
    assert [s.ids for s in a] == [s.ids for s in b] and len(a) == 6
    assert [(s.prompt_index, s.sample_index) for s in a] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert [s.ids for s in generate(models.policy, models.tokenizer, [[1, 2, 3], [4, 5]], gen.model_copy(update={"seed": 4}))] != [s.ids for s in a]


def early_stopper(models: object, prompts: list[list[int]]) -> int:
    """A token that greedy decoding emits within 5 steps for some prompt and never in 8 steps for another: made an EOS,
    one row ends early while another goes on."""
    free = generate(models.policy, models.tokenizer, prompts, GenerationConfig(do_sample=False, max_new_tokens=8, drop_finished=False))
    for t in sorted({t for s in free for t in s.ids}):
        if any(t in s.ids[:5] for s in free) and any(t not in s.ids for s in free):
            return t
    raise AssertionError(f"the tiny model's greedy outputs give no early-stop token ({[s.ids for s in free]}); change the prompts")


def test_dropping_finished_rows_decodes_what_transformers_does(tiny_model_dir: Path) -> None:
    models = load_eval_models(str(tiny_model_dir), None)
    with torch.no_grad():  # sharper weights: greedy answers then depend on every position and cached key, not one token repeated
        for param in models.policy.parameters():
            param.mul_(6.0)
    prompts = [[1, 20, 30], [1, 5, 6, 7, 8, 9, 10, 11], [2, 40], [3, 3, 7, 9], [100, 2000, 5], [7, 7]]
    models.policy.generation_config.eos_token_id = early_stopper(models, prompts)
    greedy = GenerationConfig(do_sample=False, max_new_tokens=8, batch_size=len(prompts))
    ours = generate(models.policy, models.tokenizer, prompts, greedy)
    theirs = generate(models.policy, models.tokenizer, prompts, greedy.model_copy(update={"drop_finished": False}))
    assert [(s.ids, s.finished) for s in ours] == [(s.ids, s.finished) for s in theirs]
    assert any(s.finished and len(s.ids) < 6 for s in ours) and any(not s.finished and len(s.ids) == 8 for s in ours)  # rows left early
    # sampling through the same loop: top-k 1 is greedy, so rows after a drop must still get their own next tokens
    top1 = generate(models.policy, models.tokenizer, prompts, greedy.model_copy(update={"do_sample": True, "top_k": 1, "num_samples": 2}))
    assert [s.ids for s in top1] == [s.ids for s in ours for _ in range(2)]


def test_filter_logits_applies_temperature_top_k_and_top_p() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    same = filter_logits(logits, GenerationConfig(temperature=2.0))
    assert torch.allclose(same, logits / 2)
    k2 = filter_logits(logits, GenerationConfig(top_k=2))
    assert torch.isfinite(k2).tolist() == [[True, True, False, False]]
    # nucleus: the fewest most likely tokens whose mass reaches p (0.75: 0.5 + 0.3; 0.45: 0.5 alone); a tiny p keeps one
    assert torch.isfinite(filter_logits(logits, GenerationConfig(top_p=0.75))).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, GenerationConfig(top_p=0.45))).tolist() == [[True, False, False, False]]
    assert torch.isfinite(filter_logits(logits, GenerationConfig(top_p=0.85))).tolist() == [[True, True, True, False]]
    assert torch.isfinite(filter_logits(logits[:, [3, 2, 1, 0]], GenerationConfig(top_p=0.01))).tolist() == [[False, False, False, True]]


def test_sample_tokens_draws_each_row_from_its_filtered_softmax() -> None:
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.05, 0.15, 0.3, 0.5]])
    n = 40_000
    logits = torch.log(probs).repeat_interleave(n, 0)
    rng = torch.Generator().manual_seed(0)
    drawn = sample_tokens(logits, GenerationConfig(temperature=0.5), rng).view(2, n)
    want = torch.softmax(torch.log(probs) / 0.5, -1)
    for row in range(2):
        freq = torch.bincount(drawn[row], minlength=4) / n
        assert torch.allclose(freq, want[row], atol=4 * (0.25 / n) ** 0.5), (freq, want[row])  # within 4 standard errors
    # filtered tokens are never drawn, the last one included (the uniform draw stays below the total)
    top2 = sample_tokens(logits, GenerationConfig(top_k=2), rng).view(2, n)
    assert set(top2[0].tolist()) == {0, 1} and set(top2[1].tolist()) == {2, 3}


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> tuple[RunConfig, Path]:
    tmp = tmp_path_factory.mktemp("lora-run")
    held = write_jsonl(tmp / "held.jsonl", [{"prompt": f"H{i}: pick the good word.", "chosen": f" good{i % 3}", "rejected": f" bad{i % 5} bad"}
                                             for i in range(12)])
    cfg = tiny_config(tmp, tiny_model_dir, "model.lora.enabled=true", "model.lora.target_modules=all-linear", f"data.eval={held}",
                      "train.learning_rate=5e-2", "train.max_steps=6", "report=false")
    train(cfg, show_progress=False)
    return cfg, held


def test_eval_of_a_run_folder_reproduces_the_runs_held_out_metrics(lora_run: tuple[RunConfig, Path], capsys: pytest.CaptureFixture[str]) -> None:
    cfg, held = lora_run
    run = Path(cfg.output_dir)
    assert main(["eval", "--model", str(run), "--data", str(held), "--json", "--batch-size", "3"]) == 0
    result = json.loads(capsys.readouterr().out)
    after = json.loads((run / "summary.json").read_text())["after"]
    p = result["preference"]
    assert result["reference"].startswith("adapter disabled")
    assert p["pairs"] == 12
    for key in ("rewards/accuracies", "rewards/margins", "rewards/chosen", "logps/chosen"):
        assert p[key] == pytest.approx(after[f"eval/{key}"], rel=1e-4, abs=1e-5), key
    assert abs(p["rewards/margins"]) > 1e-3  # training moved the policy, so this is not 0 == 0
    assert (run / "eval" / "eval.json").exists()


def test_eval_generation_kl_and_judges(lora_run: tuple[RunConfig, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cfg, held = lora_run
    out = tmp_path / "ev"
    argv = ["eval", "--model", str(Path(cfg.output_dir) / "model"), "--data", str(held), "--json", "--judge", f"{J}:shorter_is_better",
            "--output-dir", str(out), "generation.max_new_tokens=5", "generation.num_samples=2", "generation.max_prompts=4"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    g = result["generation"]
    assert (g["prompts"], g["samples"]) == (4, 8)
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 8 and all({"response", "reference_response", "reward", "policy_logp", "reference_logp"} <= s.keys() for s in samples)
    diffs = [s["policy_logp"] - s["reference_logp"] for s in samples]
    assert g["kl"]["estimate"] == pytest.approx(sum(diffs) / len(diffs))
    assert g["judge"]["reward_mean"] == pytest.approx(sum(-len(s["response"]) for s in samples) / 8)
    shorter = [(len(s["response"]) < len(s["reference_response"])) + 0.5 * (len(s["response"]) == len(s["reference_response"])) for s in samples]
    assert g["judge"]["win_rate"] == pytest.approx(sum(shorter) / 8) and g["judge"]["comparisons"] == 8
    # with the reference being the policy itself, every log-ratio and the KL estimate are exactly 0
    assert main(["eval", "--model", str(cfg.model.name_or_path), "--reference", str(cfg.model.name_or_path), "--data", str(held), "--json",
                 "--generate", "--output-dir", str(tmp_path / "same"), "generation.max_new_tokens=4", "generation.max_prompts=3"]) == 0
    same = json.loads(capsys.readouterr().out)
    assert same["generation"]["kl"]["estimate"] == 0.0 and same["preference"]["rewards/margins"] == 0.0


def test_eval_human_output_and_errors(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = toy_data(tmp_path, 6)
    assert main(["eval", "--model", str(tiny_model_dir), "--data", str(data), "--output-dir", str(tmp_path / "o")]) == 0
    text = capsys.readouterr().out
    assert "reference: none" in text and "accuracy" in text and "chosen_longer" in text
    assert main(["eval", "--model", str(tiny_model_dir), "--data", str(data), "--judge", "no_such_module:fn"]) == 2
    assert "cannot import module 'no_such_module'" in capsys.readouterr().err
    assert main(["eval", "--model", str(tiny_model_dir), "--data", str(data), "--judge", f"{J}:broken", "--output-dir", str(tmp_path / "b"),
                 "generation.max_new_tokens=2"]) == 2
    assert "judge server down" in capsys.readouterr().err


# ------------------------------------------------------------------ judges

def test_load_judge_tells_the_kind_and_refuses_bad_ones() -> None:
    assert load_judge(JudgeConfig(name="preftune.judges:arithmetic_exact_match")).kind == "reward"
    assert load_judge(JudgeConfig(name="preftune.judges:prefer_shorter")).kind == "pairwise"
    assert load_judge(JudgeConfig(name="preftune.judges:keywords", args={"words": ["x"]})).kind == "reward"
    for bad, msg in [("nocolon", "expected module:function"), ("preftune.judges:nope", "has no 'nope'"), (f"{J}:too_many", "4 required")]:
        with pytest.raises(JudgeError, match=msg):
            load_judge(JudgeConfig(name=bad))
    with pytest.raises(JudgeError, match="finite number"):
        load_judge(JudgeConfig(name=f"{J}:not_a_number")).reward("p", "r")


def test_builtin_judges() -> None:
    from preftune import judges

    assert judges.arithmetic_exact_match("user: What is 37 + 45?", "37 + 45 = 82") == 1.0
    assert judges.arithmetic_exact_match("What is 37 - 45?", "The answer is -8.") == 1.0
    assert judges.arithmetic_exact_match("What is 37 + 45?", "82, no wait, 83") == 0.0
    assert judges.arithmetic_exact_match("What is 37 + 45?", "I don't know") == 0.0
    assert judges.arithmetic_exact_match("What is 12 * 3?", "36") == 1.0
    # graded: the right value scores as exact match; a near miss above a far one, both below 0.5; no number 0
    g = lambda r, **kw: judges.arithmetic_graded("What is 37 + 45?", r, **kw)  # noqa: E731
    assert g("= 82") == 1.0 and g("no idea") == 0.0 and judges.arithmetic_graded("hello", "82") == 0.0
    assert g("= 83") == pytest.approx(0.5 * 10 / 11) and g("= 72") == pytest.approx(0.25) and g("= 92") == g("= 72")
    assert 0.5 > g("= 83") > g("= 92") > g("= 182") > 0 and g("= 92", scale=20.0) == pytest.approx(0.5 * 20 / 30)
    with pytest.raises(ValueError, match="scale must be > 0"):
        g("= 82", scale=0.0)
    assert judges.word_limit("p", "one two three", max_words=3) == 1.0 and judges.word_limit("p", "one two three", max_words=2) == 0.0
    assert judges.keywords("p", "Sorry, I cannot", words=["sorry", "cannot", "won't"]) == pytest.approx(2 / 3)
    assert judges.keywords("p", "Sorry", words=["sorry", "nope"], mode="any") == 1.0
    assert judges.prefer_shorter("p", "a b", "a") == 1.0 and judges.prefer_shorter("p", "a", "b") == 0.5


def test_win_rate_cancels_position_bias_and_counts_real_wins() -> None:
    n = 400
    prompts = [f"p{i}" for i in range(n)]
    biased = load_judge(JudgeConfig(name=f"{J}:always_first"))
    assert abs(win_rate(biased, prompts, ["a"] * n, ["b"] * n)["win_rate"] - 0.5) < 0.08
    fair = load_judge(JudgeConfig(name=f"{J}:wants_marker"))
    assert win_rate(fair, prompts, ["POLICY"] * n, ["ref"] * n)["win_rate"] == 1.0
    tied = win_rate(fair, prompts, ["x"] * n, ["y"] * n)
    assert tied["win_rate"] == 0.5 and tied["tie_rate"] == 1.0
    assert math.isnan(win_rate(fair, [], [], [])["win_rate"])


def test_reward_model_judge_example_loads_a_local_folder(tmp_path: Path, smol_tokenizer: object, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    rm = LlamaForSequenceClassification(LlamaConfig(vocab_size=len(smol_tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                                    num_attention_heads=2, num_key_value_heads=1, num_labels=1,
                                                    pad_token_id=smol_tokenizer.pad_token_id))
    rm.save_pretrained(tmp_path / "rm")
    smol_tokenizer.save_pretrained(tmp_path / "rm")
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "examples" / "judges"))
    judge = load_judge(JudgeConfig(name="reward_model:score", args={"path": str(tmp_path / "rm")}))
    assert judge.kind == "reward"
    a, b = judge.reward("Hi", "Hello there"), judge.reward("Hi", "Go away")
    assert isinstance(a, float) and a != b and judge.reward("Hi", "Hello there") == a
