"""The documentation's generated references: every configuration key from the config schema, every loss from the
registry. `python -m preftune.reference_pages [DOCS_DIR]` writes `reference/configuration.md` and
`reference/losses.md`; a test fails when the committed pages differ from what this module writes."""

from __future__ import annotations

import json
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from .config import COMMON_KEYS, RunConfig
from .data.mapping import ColumnMapping
from .losses import NAMES, default_beta, is_unpaired, loss_params, uses_reference
from .losses import kto as kto_loss
from .losses.registry import REWARDS, get_spec
from .scoring.metrics import KTO_METRICS, PAIR_METRICS

SECTION_TITLES = {"": "Top level", "experimental": "experimental (last: options that have not won where measured)"}


@dataclass(frozen=True)
class KeyDoc:
    """One configuration key as the reference shows it."""

    key: str
    section: str
    type: str
    default: str
    allowed: str
    description: str


def _is_section(ann: Any) -> type[BaseModel] | None:
    """The nested section model a field holds (not a column mapping, which is a free-form mapping)."""
    for c in [ann, *typing.get_args(ann)]:
        if isinstance(c, type) and issubclass(c, BaseModel) and c is not ColumnMapping:
            return c
    return None


def type_name(ann: Any) -> str:
    """A reader's name for an annotation: `int`, `float or null`, `list of str`, `one of`."""
    origin = typing.get_origin(ann)
    if origin is Literal:
        return "choice"
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(ann)
        names = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(dict.fromkeys(names)) + (" or null" if type(None) in args else "")
    if origin in (list, tuple):
        inner = typing.get_args(ann)
        return f"list of {type_name(inner[0])}" if inner else "list"
    if origin is dict:
        return "mapping"
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return f"mapping ({', '.join(ann.model_fields)})"
    return getattr(ann, "__name__", str(ann))


def allowed_values(field: FieldInfo) -> str:
    """The values a key accepts beyond its type: choices, numeric bounds, minimum lengths."""
    choices: list[Any] = []

    def walk(ann: Any) -> None:
        if typing.get_origin(ann) is Literal:
            choices.extend(typing.get_args(ann))
        for a in typing.get_args(ann) if typing.get_origin(ann) is not Literal else ():
            walk(a)

    walk(field.annotation)
    parts = [" \\| ".join(f"`{c}`" for c in choices)] if choices else []
    bounds = {annotated_types.Gt: ("> {}", "gt"), annotated_types.Ge: ("≥ {}", "ge"), annotated_types.Lt: ("< {}", "lt"),
              annotated_types.Le: ("≤ {}", "le")}
    for meta in field.metadata:
        for kind, (text, attr) in bounds.items():
            if isinstance(meta, kind):
                parts.append(text.format(getattr(meta, attr)))
        if isinstance(meta, annotated_types.MinLen):
            parts.append(f"at least {meta.min_length} item(s)")
    return ", ".join(parts)


def _default(field: FieldInfo) -> str:
    value = field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    return f"`{json.dumps(value, ensure_ascii=False)}`"


def config_keys(model: type[BaseModel] = RunConfig, prefix: str = "") -> list[KeyDoc]:
    """Every key of the schema, depth first in definition order, each with its section (the key's parent)."""
    out: list[KeyDoc] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        sub = _is_section(field.annotation)
        if sub is not None and field.default_factory is not None:
            out.extend(config_keys(sub, key + "."))
            continue
        section = key.rsplit(".", 1)[0] if "." in key else ""
        out.append(KeyDoc(key, section, type_name(field.annotation), _default(field), allowed_values(field), " ".join((field.description or "").split())))
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def config_reference() -> str:
    """The configuration reference page: the most used keys first, then every key grouped by section."""
    keys = config_keys()
    by_key = {k.key: k for k in keys}
    lines = ["# Configuration reference", "",
             "Generated from the configuration schema (`preftune/config.py`) by `python -m preftune.reference_pages`; "
             "`preftune train --help` prints the same keys. Set a key in the YAML file (`train:` then `max_steps: 5`) "
             "or on the command line (`train.max_steps=5`), or from Python as `overrides={\"train.max_steps\": 5}`.", "",
             "## The keys set most", "", "| key | default | description |", "|---|---|---|"]
    lines += [f"| `{k}` | {by_key[k].default} | {_cell(by_key[k].description)} |" for k in COMMON_KEYS]
    sections: dict[str, list[KeyDoc]] = {}
    for k in keys:
        sections.setdefault(k.section, []).append(k)
    for section, items in sections.items():
        title = SECTION_TITLES.get(section, section)
        lines += ["", f"## {title}", ""]
        doc = _section_doc(section)
        if doc:
            lines += [doc, ""]
        lines += ["| key | type | default | allowed | description |", "|---|---|---|---|---|"]
        lines += [f"| `{k.key}` | {_cell(k.type)} | {_cell(k.default)} | {k.allowed} | {_cell(k.description)} |" for k in items]
    return "\n".join(lines) + "\n"


def _section_doc(section: str) -> str:
    model: type[BaseModel] = RunConfig
    for part in [p for p in section.split(".") if p]:
        sub = _is_section(model.model_fields[part].annotation)
        if sub is None:
            return ""
        model = sub
    doc = model.__doc__ or ""
    return "" if model is RunConfig or doc.startswith(("Usage docs", "!!!")) else " ".join(doc.split())


def loss_reference() -> str:
    """The loss reference page: every registered loss with its formula, paper, β, parameters, reference and metrics."""
    lines = ["# Loss reference", "",
             "Generated from the loss registry (`preftune/losses/`) by `python -m preftune.reference_pages`; `preftune losses` "
             "lists the same names. Notation: r_w = log πθ(y_w|x) − log πref(y_w|x), r_l likewise, h = r_w − r_l, ℓ_w and ℓ_l "
             "the response token counts, avg_w = log πθ(y_w|x) / ℓ_w (avg_l likewise), σ the logistic function; every "
             "log-probability is summed over response tokens only. Set a loss with `loss.name`, its β with `loss.beta` and its "
             "parameters with `loss.params` (e.g. `loss.params={lambda_: 50}`); values outside a parameter's range fail when the "
             "config loads.", "",
             "| loss | formula (per example) | β default | reference | paper |", "|---|---|---|---|---|"]
    for name in NAMES:
        formula, paper = (kto_loss.FORMULA, kto_loss.PAPER) if is_unpaired(name) else (get_spec(name).formula, get_spec(name).paper)
        ref = "needed" if uses_reference(name) else "none (reference-free)"
        lines.append(f"| [`{name}`](#{name}) | {_cell(formula)} | {default_beta(name)} | {ref} | {_cell(paper)} |")
    for name in NAMES:
        lines += ["", f"## {name}", ""]
        if is_unpaired(name):
            description, formula, paper, domains = kto_loss.DESCRIPTION, kto_loss.FORMULA, kto_loss.PAPER, kto_loss.DOMAINS
            reward, metrics = REWARDS["log_ratio"], KTO_METRICS
            data = "single completions labelled desirable or undesirable (TRL's unpaired format), or pairs split into both"
        else:
            spec = get_spec(name)
            description, formula, paper, domains = spec.description, spec.formula, spec.paper, spec.domains
            reward, metrics, data = REWARDS[spec.reward], PAIR_METRICS, "preference pairs (prompt, chosen, rejected)"
        lines += [_cell(description), "",
                  f"- Loss: {formula}", f"- Paper: {paper}", f"- β default: {default_beta(name)}",
                  f"- Reference: {'a reference model (the frozen start, an adapter switched off, or a precomputed table)' if uses_reference(name) else 'none: reference-free, no reference model is loaded'}",
                  f"- Implicit reward logged as `rewards/*`: {reward}", f"- Trains on: {data}",
                  f"- Metrics: {', '.join(f'`{m}`' for m in metrics)}"]
        params = loss_params(name, {})
        if params:
            lines += ["", "| parameter (`loss.params`) | default | allowed |", "|---|---|---|"]
            lines += [f"| `{k}` | `{v}` | `{domains[k]}` |" for k, v in params.items()]
        else:
            lines += ["", "No parameters besides β."]
    return "\n".join(lines) + "\n"


PAGES = {"reference/configuration.md": config_reference, "reference/losses.md": loss_reference}


def write_pages(docs: Path) -> list[Path]:
    """Write every generated page under `docs`; returns their paths."""
    written = []
    for rel, make in PAGES.items():
        path = docs / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(make(), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for p in write_pages(Path(sys.argv[1] if len(sys.argv) > 1 else "docs")):
        print(p)
