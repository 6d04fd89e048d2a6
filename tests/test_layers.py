"""Imports flow one way: data and losses at the bottom, then config, models, scoring, training, then evaluation / report /
iterate, then the Python API, then the command line. This test parses every module's imports (lazy ones inside
functions included) and fails on any edge that runs back up, or on a private name taken from another package."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "preftune"

LAYERS = {"errors": 0, "stats": 0, "run_files": 0, "progress": 0, "data": 1, "losses": 1, "config": 2, "models": 3, "scoring": 4, "training": 5,
          "evaluation": 6, "report": 6, "iterate": 6, "judges": 6, "export": 6, "api": 7, "reference_pages": 7, "sweeping": 7, "cli": 8,
          "__main__": 8, "__init__": 8}


def unit(module: str) -> str:
    """The layer unit of a dotted module name inside preftune ('preftune.training.loop' -> 'training')."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports(path: Path, root: Path = PACKAGE.parent) -> list[tuple[str, list[str], int]]:
    """(absolute module, imported names, line) of every preftune import in a file under `root`."""
    rel = path.relative_to(root).with_suffix("")
    package = list(rel.parts[:-1]) if rel.name != "__init__" else list(rel.parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names = [a.name for a in node.names]
            if node.module is None:  # `from . import x`: x is a module
                found += [(f"{module}.{n}", [], node.lineno) for n in names]
            else:
                found.append((module, names, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names]
    return [(m, n, line) for m, n, line in found if m == "preftune" or m.startswith("preftune.")]


def edges() -> list[tuple[Path, int, str, str, list[str]]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        here = ".".join(rel.parts)
        for module, names, line in imports(path):
            out.append((path, line, here, module, names))
    return out


def test_every_module_has_a_layer() -> None:
    units = {unit(".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts)) for p in PACKAGE.rglob("*.py")}
    assert units <= set(LAYERS), f"modules with no layer: {sorted(units - set(LAYERS))}; add them to LAYERS"


def test_no_import_runs_back_up_the_layers() -> None:
    upward = [f"{path.relative_to(PACKAGE.parent)}:{line}: {here} imports {module}"
              for path, line, here, module, _ in edges() if LAYERS[unit(module)] > LAYERS[unit(here)]]
    assert upward == []


def test_no_private_name_crosses_a_package() -> None:
    private = [f"{path.relative_to(PACKAGE.parent)}:{line}: {here} takes {n} from {module}"
               for path, line, here, module, names in edges() for n in names
               if n.startswith("_") and unit(module) != unit(here)]
    assert private == []


def test_the_checker_resolves_relative_and_lazy_imports(tmp_path: Path) -> None:
    fake = tmp_path / "preftune" / "data" / "x.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("from ..config import RunConfig\nfrom .batch import collate\n\ndef f():\n    from ..training import loop\n")
    found = [(m, names) for m, names, _ in imports(fake, tmp_path)]
    assert found == [("preftune.config", ["RunConfig"]), ("preftune.data.batch", ["collate"]), ("preftune.training", ["loop"])]
    assert [LAYERS[unit(m)] > LAYERS[unit("preftune.data.x")] for m, _ in found] == [True, False, True]


def module_graph() -> dict[str, set[str]]:
    """Module -> the preftune modules (files, or package __init__ files) it imports, lazy and type-checking imports included."""
    graph: dict[str, set[str]] = {}
    for path, _, here, module, names in edges():
        targets = graph.setdefault(here, set())
        for candidate in [module, *(f"{module}.{n}" for n in names)]:
            file = PACKAGE.parent / (candidate.replace(".", "/") + ".py")
            package = PACKAGE.parent / candidate.replace(".", "/") / "__init__.py"
            if candidate != here and (file.exists() or (package.exists() and candidate == module and not names)):
                targets.add(candidate)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_between_modules() -> None:
    assert cycles(module_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_nothing_but_the_entry_points_imports_set_up() -> None:
    importers = {here for here, targets in module_graph().items() if "preftune.training.setup" in targets}
    assert importers <= {"preftune.training.run", "preftune.cli"}, importers


def test_evaluation_report_and_iterate_take_only_the_entry_point_and_callbacks_from_training() -> None:
    """The reference, the scoring path and the file writers live below training; above it, only `train` itself and the
    callback interface are reached for."""
    allowed = {"preftune.training.run", "preftune.training.callbacks"}
    reaching = sorted(f"{here} -> {t}" for here, targets in module_graph().items() if unit(here) in ("evaluation", "report", "iterate")
                      for t in targets if unit(t) == "training" and t not in allowed)
    assert reaching == []
