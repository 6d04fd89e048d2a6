"""The README and the documentation site: generated references equal what the code gives, the site builds in strict
mode, the benchmark tables equal their stored results, and the README stays a short page for users."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DEV_WORDS = re.compile(r"\bsessions?\b|\bissues? \d|\bissue\b|\btargets?\b|\.\./shared|this machine|this 2-core|\bCEO\b", re.I)
HASH = re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7,40}\b")


def test_the_committed_reference_pages_are_what_the_schema_and_registry_give() -> None:
    from preftune.reference_pages import PAGES

    for rel, make in PAGES.items():
        committed = (ROOT / "docs" / rel).read_text(encoding="utf-8")
        assert committed == make(), f"docs/{rel} is stale: run python -m preftune.reference_pages docs"


def test_the_configuration_reference_lists_every_key_and_the_loss_reference_every_loss() -> None:
    from preftune.losses import NAMES
    from preftune.reference_pages import config_keys

    page = (ROOT / "docs" / "reference" / "configuration.md").read_text(encoding="utf-8")
    keys = [k.key for k in config_keys()]
    assert len(keys) > 100 and all(f"| `{k}` |" in page for k in keys)
    assert page.index("`experimental.attention`") > page.index("`iterate.seed`")  # experimental is listed last
    assert all(k.description for k in config_keys()), "every key needs a description"
    losses = (ROOT / "docs" / "reference" / "losses.md").read_text(encoding="utf-8")
    assert all(f"\n## {name}\n" in losses for name in NAMES)


def test_help_lists_the_keys_set_most_first_then_every_key_by_section(capsys: pytest.CaptureFixture[str]) -> None:
    from preftune.cli import main
    from preftune.reference_pages import config_keys

    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    first = out.index("The keys set most:")
    assert first < out.index("  model.name_or_path = ") < out.index("Every key, by section:") < out.index("[experimental]")
    assert all(f"  {k.key} = " in out for k in config_keys())


def test_the_benchmark_tables_are_what_their_result_files_give() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import tables
    finally:
        sys.path.remove(str(ROOT / "bench"))
    for page in tables.PAGES:
        names = [m["name"] for m in tables.BLOCK.finditer(page.read_text(encoding="utf-8"))]
        assert names, f"{page} has no generated tables"
        assert tables.stale_blocks(page) == [], f"{page}: run python bench/tables.py"


def test_a_table_edited_by_hand_is_caught(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import tables
    finally:
        sys.path.remove(str(ROOT / "bench"))
    page = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    body = next(tables.BLOCK.finditer(page))["body"]
    edited = tmp_path / "benchmarks.md"
    edited.write_text(page.replace(body, body.replace("|", "| 9.99 |", 1), 1), encoding="utf-8")
    assert tables.stale_blocks(edited) != []


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="mkdocs is a test dependency (pip install -e .[dev])")
def test_the_documentation_site_builds_in_strict_mode(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "configuration" / "index.html").exists()
    api = (tmp_path / "site" / "api" / "index.html").read_text(encoding="utf-8")
    assert "Train a model by DPO" in api  # the API reference is rendered from the docstrings


def test_the_readme_is_a_short_page_for_users() -> None:
    text = README.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) <= 150
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    assert DEV_WORDS.findall(prose) == []
    assert HASH.findall(prose) == []
    for section in ("## Set up", "## Your own data", "## From Python", "## Commands"):
        assert section in text
    commands = text.split("## Commands", 1)[1]
    for command in ("train", "sft", "eval", "iterate", "export", "report", "data", "losses", "precompute-ref"):
        assert f"`preftune {command}" in commands


def test_the_readme_links_resolve() -> None:
    text = README.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), target


def test_the_docs_speak_to_users() -> None:
    hand_written = [p for p in (ROOT / "docs").rglob("*.md") if "reference" not in p.parts]
    found = {str(p.relative_to(ROOT)): DEV_WORDS.findall(re.sub(r"```.*?```", "", p.read_text(encoding="utf-8"), flags=re.S))
             for p in hand_written}
    assert {k: v for k, v in found.items() if v} == {}


def test_the_readmes_headline_numbers_are_the_stored_comparisons() -> None:
    import json
    import statistics

    result = json.loads((ROOT / "bench" / "results" / "compare_trl.json").read_text())
    text = README.read_text(encoding="utf-8")
    for c in result["comparisons"]:
        pre, trl = c["runs"]["preftune"], c["runs"]["trl"]
        speed = statistics.median(p["pairs_per_s"] / t["pairs_per_s"] for p, t in zip(pre, trl, strict=True))
        memory = statistics.median(x["peak_rss_mib"] for x in pre) / statistics.median(x["peak_rss_mib"] for x in trl)
        assert f"{speed:.2f}×" in text and f"{memory:.2f}×" in text, c["mode"]


def test_the_readme_counts_the_losses_the_registry_has() -> None:
    import re

    from preftune.losses import NAMES

    found = re.search(r"(\d+) losses behind one registry", (ROOT / "README.md").read_text(encoding="utf-8"))
    assert found is not None and int(found.group(1)) == len(NAMES)
