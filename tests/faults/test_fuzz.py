"""Random and malformed records, files and configs thrown at the data layer and the config loader: the only exceptions
that may reach a user are preftune's own (with a message), never a bare traceback. The counts tried are printed."""

from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings, strategies as st

from preftune.config import DataConfig
from preftune.config import load_config
from preftune.data.pipeline import load_examples
from preftune.data.tokenize import PairTokenizer
from preftune.errors import PreftuneError

FIELDS = ["prompt", "chosen", "rejected", "completion", "label", "messages", "id", "weight", "score_chosen", "score_rejected",
          "confidence", "role", "content", "text", "question", "answer"]
TRIED = {"records": 0, "files": 0, "configs": 0, "overrides": 0}
OUTCOMES = {"accepted": 0, "refused with a preftune error": 0}
SETTINGS = dict(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=30))
messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "tool", "", "x"]),
                                           "content": st.one_of(st.text(max_size=20), st.integers(), st.none())}), max_size=4)
values = st.recursive(st.one_of(scalars, messages), lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                                             st.dictionaries(st.sampled_from(FIELDS), inner, max_size=3)), max_leaves=8)
records = st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=8)), values, max_size=6)


@st.composite
def near_valid(draw: Any) -> dict[str, Any]:
    """A valid pair (standard, conversational or unpaired) with a few fields dropped, replaced or added."""
    kind = draw(st.sampled_from(["standard", "conversational", "implicit", "unpaired"]))
    text = st.text(min_size=0, max_size=25)
    if kind == "standard":
        rec: dict[str, Any] = {"prompt": draw(text), "chosen": draw(text), "rejected": draw(text)}
    elif kind == "conversational":
        turn = lambda role: [{"role": role, "content": draw(text)}]  # noqa: E731
        rec = {"prompt": turn("user"), "chosen": turn("assistant"), "rejected": turn("assistant")}
    elif kind == "implicit":
        rec = {"chosen": [{"role": "user", "content": draw(text)}, {"role": "assistant", "content": draw(text)}],
               "rejected": [{"role": "user", "content": draw(text)}, {"role": "assistant", "content": draw(text)}]}
    else:
        rec = {"prompt": draw(text), "completion": draw(text), "label": draw(st.one_of(st.booleans(), scalars))}
    for _ in range(draw(st.integers(0, 2))):
        key = draw(st.sampled_from(FIELDS))
        action = draw(st.sampled_from(["drop", "replace", "add"]))
        if action == "drop":
            rec.pop(key, None)
        else:
            rec[key] = draw(values)
    return rec


records = st.one_of(records, near_valid(), near_valid())
lines = st.one_of(records.map(json.dumps), st.text(max_size=40), st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
                  st.lists(records, max_size=2).map(json.dumps))


def expect_preftune_error(fn: Any, *args: Any) -> Any:
    try:
        out = fn(*args)
    except PreftuneError as e:
        assert str(e).strip(), "a preftune error without a message"
        OUTCOMES["refused with a preftune error"] += 1
        return None
    OUTCOMES["accepted"] += 1
    return out


@settings(**SETTINGS)
@given(st.lists(lines, min_size=0, max_size=8), st.sampled_from(["fail", "skip"]), st.sampled_from(["auto", "standard", "conversational", "unpaired"]))
def test_jsonl_of_random_lines(content: list[str], on_error: str, fmt: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "data.jsonl"
        path.write_text("\n".join(content), encoding="utf-8", errors="surrogatepass")
        TRIED["records"] += 1
        expect_preftune_error(load_examples, str(path), DataConfig(on_error=on_error, format=fmt).load_settings())


@settings(**SETTINGS)
@given(st.sampled_from([".json", ".csv", ".parquet", ".jsonl", ".txt", ""]), st.binary(max_size=200), st.sampled_from(["fail", "skip"]))
def test_random_bytes_in_any_file_type(suffix: str, blob: bytes, on_error: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"data{suffix}"
        path.write_bytes(blob)
        TRIED["files"] += 1
        expect_preftune_error(load_examples, str(path), DataConfig(on_error=on_error).load_settings())


@settings(**SETTINGS)
@given(st.lists(records, min_size=1, max_size=5))
def test_json_array_records_then_tokenize(smol_tokenizer: Any, recs: list[dict[str, Any]]) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "data.json"
        path.write_text(json.dumps(recs))
        TRIED["records"] += 1
        loaded = expect_preftune_error(load_examples, str(path), DataConfig(on_error="skip").load_settings())
        if loaded is not None:
            tok = PairTokenizer(smol_tokenizer, DataConfig(max_length=64, max_prompt_length=32).tokenize_settings())
            for ex in loaded.examples:
                expect_preftune_error(tok, ex) if hasattr(ex, "rejected") else None


config_keys = st.sampled_from(["model", "data", "loss", "train", "reference", "diagnostics", "output_dir", "report_to", "resume_from",
                               "report", "name_or_path", "beta", "batch_size", "lora", "r", "train.max_steps", "x"])
config_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(config_keys, inner, max_size=4)),
                             max_leaves=10)


@settings(**SETTINGS)
@given(st.one_of(st.dictionaries(config_keys, config_values, max_size=6).map(lambda d: json.dumps(d)), st.text(max_size=120),
                 st.lists(st.text(string.printable, max_size=20), max_size=6).map("\n".join)))
def test_random_config_files(text: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "run.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        TRIED["configs"] += 1
        expect_preftune_error(load_config, str(path), [])


override_keys = st.sampled_from(["train.max_steps", "loss.name", "loss.beta", "loss.params.alpha", "model.lora.r", "data.filters.min_confidence",
                                 "report_to", "train", "nope.key", "train.layout", "data.columns.prompt", ""])


@settings(**SETTINGS)
@given(st.lists(st.one_of(st.tuples(override_keys, st.text(max_size=12)).map(lambda kv: f"{kv[0]}={kv[1]}"), st.text(max_size=15)), max_size=4))
def test_random_overrides(overrides: list[str]) -> None:
    TRIED["overrides"] += 1
    expect_preftune_error(load_config, None, overrides)


def test_zz_report_counts() -> None:
    print(f"fuzz cases tried: {TRIED} (total {sum(TRIED.values())}); outcomes: {OUTCOMES}")
    assert OUTCOMES["accepted"] > 0 and OUTCOMES["refused with a preftune error"] > 0
