"""Every input format and file type loads; every kind of bad input is reported with file, line, field and fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from preftune.config import DataConfig
from preftune.data.pipeline import load_examples
from preftune.data.records import PreferencePair, UnpairedExample
from preftune.errors import DataError

from ..conftest import write_jsonl

STANDARD = [{"prompt": "What is 2+2?", "chosen": " 4", "rejected": " 5", "id": "a", "weight": 2, "score_chosen": 9, "score_rejected": 3},
            {"prompt": "Capital of France?", "chosen": " Paris", "rejected": " Lyon"}]


def load(path: Path | str, **kw) -> list:
    return load_examples(str(path), DataConfig(**kw).load_settings()).examples


def test_standard_jsonl_keeps_optional_fields(tmp_path: Path) -> None:
    out = load(write_jsonl(tmp_path / "d.jsonl", STANDARD))
    assert out[0] == PreferencePair("What is 2+2?", " 4", " 5", source=f"{tmp_path / 'd.jsonl'}:1", id="a", score_chosen=9.0,
                                    score_rejected=3.0, weight=2.0, confidence=6.0)
    assert out[1].prompt == "Capital of France?" and out[1].weight == 1.0


def test_json_list_parquet_csv_and_save_to_disk_give_the_same_pairs(tmp_path: Path) -> None:
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in STANDARD]
    (tmp_path / "d.json").write_text(json.dumps(rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    (tmp_path / "d.csv").write_text("prompt,chosen,rejected\n" + "".join(f'"{r["prompt"]}","{r["chosen"]}","{r["rejected"]}"\n' for r in rows))
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    texts = lambda exs: [(e.prompt, e.chosen, e.rejected) for e in exs]  # noqa: E731
    want = [(r["prompt"], r["chosen"], r["rejected"]) for r in rows]
    for name in ("d.json", "d.parquet", "d.csv", "saved"):
        assert texts(load(tmp_path / name)) == want, name


def test_several_files_combine(tmp_path: Path) -> None:
    a = write_jsonl(tmp_path / "a.jsonl", STANDARD[:1])
    b = write_jsonl(tmp_path / "b.jsonl", STANDARD[1:])
    assert len(load_examples([str(a), str(b)], DataConfig().load_settings()).examples) == 2


def test_implicit_prompt_is_cut_after_the_last_assistant_marker(tmp_path: Path) -> None:
    rec = {"chosen": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: and?\n\nAssistant: Fine, thanks.",
           "rejected": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: and?\n\nAssistant: Go away."}
    loaded = load_examples(str(write_jsonl(tmp_path / "d.jsonl", [rec])), DataConfig().load_settings())
    assert loaded.format == "implicit_prompt"
    ex = loaded.examples[0]
    assert ex.prompt == "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: and?\n\nAssistant:"
    assert (ex.chosen, ex.rejected) == (" Fine, thanks.", " Go away.")


def test_implicit_prompt_when_responses_share_their_first_words(tmp_path: Path) -> None:
    rec = {"chosen": "\n\nHuman: q\n\nAssistant: I think yes", "rejected": "\n\nHuman: q\n\nAssistant: I think no"}
    ex = load(write_jsonl(tmp_path / "d.jsonl", [rec]))[0]
    assert ex.prompt.endswith("\n\nAssistant:") and ex.chosen == " I think yes"


def test_conversational_explicit_and_implicit(tmp_path: Path) -> None:
    u = {"role": "user", "content": "Hi"}
    explicit = {"prompt": [u], "chosen": [{"role": "assistant", "content": "Hello!"}], "rejected": [{"role": "assistant", "content": "Bye."}]}
    implicit = {"chosen": [u, {"role": "assistant", "content": "Hello!"}], "rejected": [u, {"role": "assistant", "content": "Bye."}]}
    a = load_examples(str(write_jsonl(tmp_path / "a.jsonl", [explicit])), DataConfig().load_settings())
    b = load_examples(str(write_jsonl(tmp_path / "b.jsonl", [implicit])), DataConfig().load_settings())
    assert (a.format, b.format) == ("conversational", "conversational_implicit_prompt")
    assert (a.examples[0].prompt, a.examples[0].chosen, a.examples[0].rejected) == (b.examples[0].prompt, b.examples[0].chosen, b.examples[0].rejected)


def test_unpaired_format_for_kto(tmp_path: Path) -> None:
    loaded = load_examples(str(write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "completion": " good", "label": True},
                                                                  {"prompt": "p", "completion": " bad", "label": "false"}])), DataConfig().load_settings())
    assert loaded.format == "unpaired"
    assert loaded.examples == [UnpairedExample("p", " good", True, source=f"{tmp_path / 'd.jsonl'}:1"),
                               UnpairedExample("p", " bad", False, source=f"{tmp_path / 'd.jsonl'}:2")]


BAD = [
    ("malformed JSON", b'{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a", "chosen": \n', 2, None),
    ("missing field", b'{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a", "chosen": "b"}\n', 2, "rejected"),
    ("wrong type", b'{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a", "chosen": 5, "rejected": "c"}\n', 2, "chosen"),
    ("empty text", b'{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a", "chosen": "  ", "rejected": "c"}\n', 2, "chosen"),
    ("chosen identical to rejected", b'{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a", "chosen": "x", "rejected": "x"}\n', 2, "rejected"),
    ("undecodable bytes", b'{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "\xff\xfe", "chosen": "b", "rejected": "c"}\n', 2, None),
    ("no shared prefix", b'{"chosen": "\\n\\nHuman: a\\n\\nAssistant: b", "rejected": "\\n\\nHuman: a\\n\\nAssistant: c"}\n{"chosen": "Human: x", "rejected": "Other: y"}\n', 2, "chosen"),
    ("not an object", b'{"prompt": "a", "chosen": "b", "rejected": "c"}\n[1, 2]\n', 2, None),
]


@pytest.mark.parametrize("kind,content,line,field", BAD, ids=[b[0] for b in BAD])
def test_each_error_kind_names_file_line_field_and_fix(tmp_path: Path, kind: str, content: bytes, line: int, field: str | None) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError) as info:
        load(path)
    msg = str(info.value)
    assert f"{path}:{line}" in msg and kind in msg and "Fix:" in msg and "1 invalid record" in msg
    if field:
        assert f"field '{field}'" in msg
    kept = load_examples(str(path), DataConfig(on_error="skip").load_settings())
    assert len(kept.examples) == 1 and kept.errors == {kind: 1}


def test_fail_lists_first_errors_and_total_count_by_kind(tmp_path: Path) -> None:
    rows = [{"prompt": "a", "chosen": "", "rejected": "c"}] * 12 + [{"prompt": "a", "chosen": 1, "rejected": "c"}] * 3
    with pytest.raises(DataError) as info:
        load(write_jsonl(tmp_path / "d.jsonl", rows + [STANDARD[0]]))
    msg = str(info.value)
    assert "15 invalid record(s) (empty text: 12, wrong type: 3)" in msg and "... and 5 more" in msg


def test_empty_file_and_unknown_mapping_column_are_errors(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match="empty.jsonl: the file is empty"):
        load(tmp_path / "empty.jsonl")
    from preftune.data.mapping import ColumnMapping

    path = write_jsonl(tmp_path / "d.jsonl", [{"q": "a", "good": "b", "bad": "c"}])
    with pytest.raises(DataError, match=r"unknown column\(s\) \['answer'\].*has \['bad', 'good', 'q'\]"):
        load(path, columns=ColumnMapping(prompt="q", chosen="answer", rejected="bad"))
    assert load(path, columns=ColumnMapping(prompt="q", chosen="good", rejected="bad"))[0].chosen == "b"


def test_filters_drop_and_count_near_identical_duplicates_low_confidence_and_long(tmp_path: Path) -> None:
    rows = [STANDARD[0], STANDARD[0], {"prompt": "p", "chosen": "Same  text", "rejected": "same text"},
            {"prompt": "p", "chosen": "a", "rejected": "b", "confidence": 0.4}, {"prompt": "p" * 50, "chosen": "a", "rejected": "b"},
            {"prompt": "p", "chosen": "ok", "rejected": "no", "confidence": 0.9}]
    loaded = load_examples(str(write_jsonl(tmp_path / "d.jsonl", rows)), DataConfig(filters=dict(min_confidence=0.5, max_prompt_chars=20)).load_settings())
    assert len(loaded.examples) == 2
    assert loaded.removed == {"chosen and rejected differ only in whitespace or case": 1, "duplicate pair": 1,
                              "confidence below 0.5": 1, "prompt over 20 characters": 1}


def test_builtin_arithmetic_is_deterministic_and_distinct() -> None:
    a = load_examples("builtin:arithmetic", DataConfig(builtin_size=50).load_settings()).examples
    b = load_examples("builtin:arithmetic", DataConfig(builtin_size=50).load_settings()).examples
    assert a == b and len({str(e.prompt) for e in a}) == 50
