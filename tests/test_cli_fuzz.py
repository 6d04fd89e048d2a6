"""Property-based: every subcommand of `preftune.cli.main`, driven with random and malformed flags, values, overrides,
files and folders, ends in a preftune message (exit 2), a usage error (2), help (0) or success (0): never an internal
error (1), never a traceback. The heavy stages (data preparation and model loading of a train run, an iterate round)
are replaced by a marker: what is checked is everything a command validates before its work starts."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from preftune import cli
from preftune.config import describe_keys

CASES = 1200


class Reached(BaseException):
    """A command got past its checks to the work itself (a BaseException, so the CLI's own handlers let it through)."""


def stop(*args: Any, **kwargs: Any) -> None:
    raise Reached


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Files and folders a user might point a command at by mistake, each broken in its own way."""
    root = tmp_path_factory.mktemp("zoo")
    (root / "empty_dir").mkdir()
    (root / "garbage.bin").write_bytes(bytes(range(256)) * 4)
    (root / "not_gguf.gguf").write_text("hello")
    (root / "truncated.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x01" * 12)
    (root / "empty.jsonl").write_text("")
    (root / "bad.jsonl").write_text('{"prompt": "a", "chosen": "b"\n[1, 2]\n{"chosen": "", "rejected": "x"}\n')
    (root / "pairs.jsonl").write_text("".join(json.dumps({"prompt": f"p{i}", "chosen": f" c{i}", "rejected": f" r{i}"}) + "\n" for i in range(6)))
    (root / "unpaired.jsonl").write_text("".join(json.dumps({"prompt": f"p{i}", "completion": " c", "label": i % 2 == 0}) + "\n" for i in range(6)))
    (root / "list.yaml").write_text("- 1\n- 2\n")
    (root / "bad.yaml").write_text("train: [1, 2\n")
    (root / "latin1.yaml").write_bytes("model: caf\xe9\n".encode("latin-1"))
    (root / "ok.yaml").write_text(f"output_dir: {root / 'out'}\ntrain: {{max_steps: 1}}\n")
    for name, files in {"run_bad_config": {"config.yaml": "model: [\n", "metrics.jsonl": '{"step": 1, "loss": 0.5}\n'},
                        "run_bad_summary": {"config.yaml": "loss: {name: dpo}\n", "metrics.jsonl": '{"step": 1, "loss": 0.5}\n', "summary.json": "{"},
                        "run_odd_metrics": {"config.yaml": "loss: {name: dpo}\n", "metrics.jsonl": '{"step": "x", "loss": "y"}\n[]\n{"step": 2, "loss": 1}\n',
                                            "data_summary.json": "[1]"},
                        "run_no_metrics": {"config.yaml": "stage: sft\n"}}.items():
        folder = root / name
        (folder / "model").mkdir(parents=True)
        for file, text in files.items():
            (folder / file).write_text(text)
    judge = root / "judges_that_fail.py"
    judge.write_text("raise RuntimeError('broken at import')\n")
    return {p.name: str(p) for p in root.iterdir()} | {"missing": str(root / "missing" / "x.yaml"), "root": str(root)}


@pytest.fixture(scope="module")
def patched(zoo: dict[str, str]) -> Iterator[None]:
    import sys

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("preftune.training.setup.setup_data", stop)
        mp.setattr("preftune.iterate.rounds.evaluate_round", stop)
        mp.chdir(zoo["root"])
        mp.setattr(sys, "path", [zoo["root"], *sys.path])
        yield


def subcommands() -> dict[str, argparse.ArgumentParser]:
    """Each (sub)command's parser, by its command words."""
    out: dict[str, argparse.ArgumentParser] = {}

    def walk(parser: argparse.ArgumentParser, words: tuple[str, ...]) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            out[" ".join(words)] = parser
        for action in subs:
            for name, child in action.choices.items():
                walk(child, (*words, name))

    walk(cli.build_parser(), ())
    return out


PARSERS = subcommands()
KEYS = [line.split(" = ")[0] for line in describe_keys()]
JUNK = ["", "-", "--", "=", "x", "0", "-1", "-3", "1e9", "nan", "inf", "-inf", "0.0", "true", "null", "[1, 2", "{a: 1}", "key=", "=value",
        "a.b.c=1", "é", "💥", "/dev/null", "judges_that_fail:score", "preftune.judges:arithmetic_exact_match", "os:getcwd", "no_such_module:f",
        "builtin:arithmetic", "builtin:nothing", "hf", "gguf", "q8_0", "f16", "dpo", "kto", "sft"]  # no loadable model: nothing heavy runs


def values(zoo: dict[str, str]) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(JUNK), st.sampled_from(sorted(zoo.values())), st.text(max_size=12),
                     st.integers(-5, 10**6).map(str), st.floats(allow_nan=True, allow_infinity=True).map(str))


def flag_args(parser: argparse.ArgumentParser, zoo: dict[str, str]) -> st.SearchStrategy[list[str]]:
    options = [a for a in parser._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]

    def one(action: argparse.Action) -> st.SearchStrategy[list[str]]:
        flag = st.sampled_from(action.option_strings)
        if action.nargs == 0:
            return flag.map(lambda f: [f])
        choices = st.sampled_from(list(action.choices)) if action.choices else values(zoo)
        return st.tuples(flag, st.one_of(choices, values(zoo))).map(list)

    return st.lists(st.one_of(*[one(a) for a in options]), max_size=4).map(lambda xs: [t for x in xs for t in x]) if options else st.just([])


def overrides(zoo: dict[str, str]) -> st.SearchStrategy[list[str]]:
    item = st.tuples(st.sampled_from(KEYS), values(zoo)).map(lambda kv: f"{kv[0]}={kv[1]}")
    return st.lists(st.one_of(item, values(zoo)), max_size=4)


@st.composite
def command_lines(draw: st.DrawFn, zoo: dict[str, str]) -> list[str]:
    words = draw(st.sampled_from(sorted(PARSERS)))
    parser = PARSERS[words]
    positional = draw(st.lists(st.one_of(st.sampled_from(sorted(zoo.values())), values(zoo)), max_size=2))
    args = [*words.split(), *positional, *draw(flag_args(parser, zoo)), *draw(overrides(zoo))]
    if draw(st.booleans()):  # keep runs away from real work: a writable scratch output
        args.append(f"output_dir={zoo['root']}/out-{draw(st.integers(0, 3))}")
    return draw(st.permutations(args)) if draw(st.integers(0, 4)) == 0 else args


def run(argv: list[str]) -> tuple[int | str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code: int | str = cli.main(argv)
        except Reached:
            code = "reached"
    return code, out.getvalue() + err.getvalue()


seen: list[tuple[str, int | str]] = []  # (command words, outcome) of every case


@settings(max_examples=CASES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=bool(os.environ.get("CI")))
@given(data=st.data())
def test_every_subcommand_fails_only_with_preftune_messages(zoo: dict[str, str], patched: None, data: st.DataObject) -> None:
    argv = data.draw(command_lines(zoo))
    code, output = run(argv)
    seen.append((next((w for w in sorted(PARSERS, key=len, reverse=True) if " ".join(argv).startswith(w)), "other"), code))
    assert code in (0, 2, "reached"), f"preftune {' '.join(argv)!r} -> exit {code}\n{output[-3000:]}"
    assert "Traceback" not in output and "internal error" not in output, (argv, output[-3000:])


def test_the_fuzz_ran_its_cases() -> None:
    """Hypothesis ran every case asked for, over every subcommand, and the cases reached each outcome: refused (2),
    finished (0) and past the checks to the work itself."""
    from collections import Counter

    by_command = Counter(words for words, _ in seen)
    outcomes = Counter(code for _, code in seen)
    print(f"\nCLI fuzz: {len(seen)} cases; by command {dict(sorted(by_command.items()))}; outcomes {dict(outcomes)}")
    assert len(seen) >= 1000, len(seen)
    assert set(PARSERS) <= set(by_command), set(PARSERS) - set(by_command)
    assert {0, 2, "reached"} <= set(outcomes), outcomes
