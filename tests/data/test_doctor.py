"""`preftune data doctor`'s checks of form on pairs made here (each problem planted once, and near misses that must not
be flagged), its files, and `data.filters.exclude_from` leaving the marked pairs out of training data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from preftune.cli import main
from preftune.config import load_config
from preftune.data.doctor import DoctorSettings, examine, jaccard, point_biserial, share_with_interval, shingles
from preftune.data.filters import content_key
from preftune.data.pipeline import load_examples
from preftune.data.records import PreferencePair
from preftune.errors import DataError

from ..conftest import write_jsonl

LONG = ("the quick brown fox jumps over the lazy dog while the farmer watches from the old wooden gate and the sun sets "
        "slowly behind the hills far away in the west of the quiet valley")


def pair(prompt: str, chosen: str, rejected: str, i: int = 0) -> PreferencePair:
    return PreferencePair(prompt, chosen, rejected, source="t.jsonl", id=str(i))


def planted() -> tuple[list[PreferencePair], list[PreferencePair]]:
    train = [
        pair("Summarize: " + LONG, "A fox jumps over a dog at sunset.", "Foxes are mammals.", 0),
        pair("summarize:   " + LONG.upper(), "a fox jumps over a dog at SUNSET.", "Foxes are  mammals.", 1),  # 0 again, case and spaces aside
        pair("Summarize: " + LONG + " today", "A fox jumps over a dog at sunset.", "Foxes are mammals.", 2),  # 0 with one word more
        pair("Summarize: " + LONG, "A dog sleeps while a farmer watches the sun go down.", "It is a story.", 3),  # 0's prompt, other answers
        pair("What is 2 + 2?", "Four.", "four.", 4),  # the same response twice, case aside
        pair("Describe the valley.", LONG, LONG + " indeed", 5),  # responses nearly the same
        pair("Repeat after me: the valley is quiet tonight", "You said: repeat after me: the valley is quiet tonight.", "no", 6),  # prompt in a response
        pair("Name a colour.", "Blue, the colour of a clear sky over the sea.", "Red.", 7),
    ]
    eval_pairs = [
        pair("Summarize: " + LONG, "A fox jumps over a dog at sunset today!", "Foxes are mammals.", 0),  # train 0 with one word more
        pair("Name a fruit.", "Apple.", "A fruit grows on trees and has seeds inside it.", 1),
    ]
    return train, eval_pairs


def flags(report, split: str) -> dict[int, list[str]]:
    return {r["index"]: r["flags"] for r in report["records"] if r["split"] == split}


def test_each_planted_problem_is_flagged_and_nothing_else() -> None:
    train, eval_pairs = planted()
    report = examine(train, eval_pairs)
    got = flags(report, "train")
    assert got == {0: [], 1: ["exact_duplicate"], 2: ["near_duplicate"], 3: [], 4: ["identical_responses"], 5: ["near_identical_responses"],
                   6: ["prompt_in_response"], 7: []}
    records = {r["index"]: r for r in report["records"] if r["split"] == "train"}
    assert records[1]["duplicate_of"] == 0 and records[2]["duplicate_of"] == 0 and 0.8 <= records[2]["similarity"] < 1
    assert records[6]["prompt_in"] == ["chosen"]
    assert [r["exclude"] for r in records.values()] == [False, True, True, False, True, False, False, False]
    assert flags(report, "eval") == {0: ["leaked"], 1: []}
    leaked = next(r for r in report["records"] if r["split"] == "eval" and r["index"] == 0)
    assert leaked["leaked_from"] == 0 and leaked["exclude"] is True
    assert report["summary"]["train"]["flags"] == {"exact_duplicate": 1, "identical_responses": 1, "near_duplicate": 1,
                                                   "near_identical_responses": 1, "prompt_in_response": 1}
    assert report["summary"]["train"]["excluded"] == 3 and report["summary"]["eval"]["excluded"] == 1
    assert all(r["key"] == content_key(p) for r, p in zip(report["records"], [*train, *eval_pairs]))


def test_the_threshold_decides_what_counts_as_nearly_the_same() -> None:
    train, eval_pairs = planted()
    strict = examine(train, eval_pairs, DoctorSettings(near=0.99))
    assert flags(strict, "train")[2] == [] and flags(strict, "train")[5] == [] and flags(strict, "eval")[0] == []
    assert flags(strict, "train")[1] == ["exact_duplicate"]  # exact duplicates do not depend on it


def test_empty_and_truncated_responses_with_token_counts() -> None:
    pairs = [pair("p1", "", "an answer", 0), pair("p2", "a long answer", "short", 1), pair("p3", "ok", "fine", 2)]
    tokens = {"train": [(5, 0, 3), (5, 20, 2), (5, 4, 4)]}
    report = examine(pairs, settings=DoctorSettings(max_length=12), token_lengths=tokens)
    assert flags(report, "train") == {0: ["empty_response"], 1: ["truncated"], 2: []}
    assert report["records"][0]["empty"] == ["chosen"] and report["records"][1]["truncated"] == ["chosen"]
    s = report["summary"]["train"]
    assert s["truncated_share"] == {"chosen": pytest.approx(1 / 3), "rejected": 0.0} and s["length_unit"] == "tokens"
    assert s["chosen_longer"]["share"] == pytest.approx(1 / 3)


def test_length_statistics_against_their_formulas() -> None:
    values = [10, 12, 14, 4, 5, 6]  # r_pb = (M1 − M0) / s · √(p q), s the population standard deviation of every length
    s = math.sqrt(sum(v * v for v in values) / 6 - (sum(values) / 6) ** 2)
    assert point_biserial([10, 12, 14], [4, 5, 6]) == pytest.approx((12 - 5) / s * 0.5, rel=1e-9)
    assert point_biserial([5, 5], [5, 5]) is None
    w = share_with_interval(30, 100)
    assert w["share"] == 0.3 and w["low"] == pytest.approx(0.2189, abs=1e-4) and w["high"] == pytest.approx(0.3958, abs=1e-4)  # Wilson
    assert math.isnan(share_with_interval(0, 0)["share"])
    assert shingles("A b,  C d e f!") == {"a b c d e", "b c d e f"} and shingles("one two") == {"one two"} and shingles("  ") == set()
    assert jaccard({"a", "b"}, {"b", "c"}) == pytest.approx(1 / 3) and jaccard(set(), set()) == 1.0


def as_records(pairs: list[PreferencePair]) -> list[dict[str, str]]:
    return [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs]


def test_the_command_writes_its_files_and_training_data_leaves_the_marked_pairs_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train, eval_pairs = planted()
    train_file = write_jsonl(tmp_path / "train.jsonl", as_records(train))
    eval_file = write_jsonl(tmp_path / "eval.jsonl", as_records(eval_pairs))
    out = tmp_path / "doctor"
    assert main(["data", "doctor", str(train_file), "--eval", str(eval_file), "--form-only", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "train: 8 pairs, 3 marked to exclude" in printed and "exact_duplicate" in printed and "data.filters.exclude_from" in printed
    records = [json.loads(line) for line in (out / "doctor.jsonl").read_text().splitlines()]
    assert len(records) == 10 and sum(r["exclude"] for r in records) == 4
    summary = json.loads((out / "doctor_summary.json").read_text())
    assert summary["train"]["flags"]["near_duplicate"] == 1 and summary["sources"]["eval"] == [str(eval_file)]
    page = (out / "doctor.html").read_text()
    assert "<script" not in page and "near_identical_responses" in page and "leaked" in page

    settings = load_config(None, [f"data.filters.exclude_from=[{out / 'doctor.jsonl'}]", "data.filters.drop_near_identical=false",
                                  "data.filters.drop_duplicates=false"]).data.load_settings()
    kept = load_examples(str(train_file), settings).examples
    assert [e.chosen for e in kept] == [train[i].chosen for i in (0, 3, 5, 6, 7)]
    held = load_examples(str(eval_file), settings).examples
    assert [e.chosen for e in held] == [eval_pairs[1].chosen]  # the leaked eval pair is left out


def test_a_bad_exclude_file_is_refused_naming_it(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", as_records(planted()[0]))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"exclude": true}\n')
    for path, what in ((bad, r"bad.jsonl:1: not a doctor record"), (tmp_path / "missing.jsonl", "cannot read it")):
        settings = load_config(None, [f"data.filters.exclude_from=[{path}]"]).data.load_settings()
        with pytest.raises(DataError, match=f"data.filters.exclude_from: .*{what}"):
            load_examples(str(data), settings)


def test_the_command_refuses_a_threshold_outside_zero_to_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", as_records(planted()[0]))
    assert main(["data", "doctor", str(data), "--near", "1.5", "-o", str(tmp_path / "o")]) != 0
    assert "--near 1.5" in capsys.readouterr().err


def test_on_pandalm_the_doctor_finds_its_repeated_pairs() -> None:
    """PandaLM's test set (shared data) holds the same pair more than once: what the docs quote."""
    from preftune.data.doctor import diagnose

    from ..conftest import shared_file

    settings = load_config(None, ["data.recipe=pandalm"]).data.settings(train=[str(shared_file("pandalm", "testset-v1.json"))])
    s = diagnose(settings)["summary"]["train"]
    assert s["pairs"] == 855 and s["flags"] == {"exact_duplicate": 82, "near_duplicate": 21, "prompt_in_response": 2} and s["excluded"] == 103
    assert s["unreadable_records"] == {"empty text": 53, "wrong type": 6}
    assert round(s["chosen_longer"]["share"], 3) == 0.656
