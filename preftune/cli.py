"""The `preftune` command: train, sft, precompute-ref, data inspect, losses, report, compare, sweep, eval, iterate, export."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from collections.abc import Sequence
from typing import Any

from .errors import ConfigError, PreftuneError

TRAIN_EPILOG = "Overrides: any config key as KEY=VALUE, e.g. train.max_steps=5 loss.name=dpop model.lora.enabled=true"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="preftune", description="Align causal language models with preference pairs (DPO and its family).")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    from .config import help_text

    train = sub.add_parser("train", help="train a model on preference pairs", formatter_class=argparse.RawDescriptionHelpFormatter,
                           description=f"Train from CONFIG.yaml.\n\n{help_text()}", epilog=TRAIN_EPILOG)
    train.add_argument("config", nargs="?", help="YAML config (defaults when omitted)")
    train.add_argument("overrides", nargs="*", help="KEY=VALUE overrides")

    sft = sub.add_parser("sft", help="supervised fine-tuning (the stage before DPO) on SFT data or preference data's chosen responses",
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         description="Fine-tune on completions: TRL's SFT formats (prompt/completion, messages, text) or the chosen responses of "
                         "preference data. Same config keys as train (stage is set to sft); point a later `preftune train`'s "
                         "model.name_or_path at this run's folder to start DPO from it.", epilog=TRAIN_EPILOG)
    sft.add_argument("config", nargs="?", help="YAML config (defaults when omitted)")
    sft.add_argument("overrides", nargs="*", help="KEY=VALUE overrides")

    pre = sub.add_parser("precompute-ref", help="compute and cache reference log-probs for a config's data, then exit")
    pre.add_argument("config", nargs="?")
    pre.add_argument("overrides", nargs="*")

    data = sub.add_parser("data", help="data tools")
    dsub = data.add_subparsers(dest="data_command", required=True)
    ins = dsub.add_parser("inspect", help="format, counts, errors, token lengths, truncation and length bias of a data set")
    ins.add_argument("paths", nargs="+", help="data file(s), folder or dataset name; KEY=VALUE items are config overrides (data.recipe=pandalm)")
    ins.add_argument("--model", help="tokenizer for token lengths (folder, .gguf, or smollm2-135m-instruct); characters when absent")
    ins.add_argument("--config", help="YAML config whose data section (recipe, mapping, filters, lengths) applies")
    ins.add_argument("--json", action="store_true", help="print one JSON object")

    doc = dsub.add_parser("doctor", help="pairs that are probably wrong: duplicates and near duplicates, leakage into eval, identical or empty "
                          "responses, truncation, length bias, prompts repeated in answers",
                          description="Check preference data pair by pair and write doctor.jsonl (one record per pair: its flags, the numbers "
                          "behind them and its content key), doctor_summary.json and doctor.html. data.filters.exclude_from: DIR/doctor.jsonl "
                          "then drops the pairs marked to exclude.")
    doc.add_argument("paths", nargs="+", help="train data file(s), folder or dataset name; KEY=VALUE items are config overrides (data.recipe=pandalm)")
    doc.add_argument("--eval", nargs="+", help="held-out data, checked the same way and for pairs leaked from train")
    doc.add_argument("--model", help="the model of the model checks and the tokenizer of token lengths and truncation at data.max_length "
                     "(folder, .gguf, or smollm2-135m-instruct, the default)")
    doc.add_argument("--form-only", action="store_true", help="only the checks of form: no model, lengths in characters unless --model is given")
    doc.add_argument("--folds", type=int, default=5, help="cross-fitting folds of the label-noise score (default 5)")
    doc.add_argument("--steps", type=int, default=30, help="training steps of each fold's brief DPO run (default 30)")
    doc.add_argument("--seed", type=int, default=0, help="seed of the fold assignment and the fold runs")
    doc.add_argument("--set", dest="fold_overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="config override of the fold runs (repeatable), e.g. --set train.learning_rate=1e-4")
    doc.add_argument("--config", help="YAML config whose data section (recipe, mapping, lengths) applies")
    doc.add_argument("--near", type=float, default=0.8, help="word-shingle Jaccard similarity at which two texts count as nearly the same (default 0.8)")
    doc.add_argument("-o", "--output", default="runs/doctor", help="folder for doctor.jsonl, doctor_summary.json, doctor.html (default runs/doctor)")
    doc.add_argument("--json", action="store_true", help="print the summary as one JSON object")

    sub.add_parser("losses", help="list the losses in the registry")

    sw = sub.add_parser("sweep", help="search config keys on Optuna: each trial a run folder, the study resumable and shared by workers",
                        description="Search the keys of SPACE.yaml (choices or ranges) for the best held-out metric. Every trial is a run "
                        "folder under --output; the study lives in a SQLite file there (or the sweep file's storage URL), so a killed "
                        "sweep resumes and several processes can work one study. Writes best.yaml and compare.html.")
    sw.add_argument("config", help="the base run configuration (YAML)")
    sw.add_argument("space", help="the sweep file: space, metric, direction, sampler, pruner, trials, max_time, storage")
    sw.add_argument("-o", "--output", default="runs/sweep", help="the sweep folder (default runs/sweep)")
    sw.add_argument("overrides", nargs="*", help="KEY=VALUE overrides of the base configuration")

    cmp_ = sub.add_parser("compare", help="runs side by side: overlaid curves, differing settings, held-out metrics with standard errors, "
                          "paired differences, diagnostics and advice (one self-contained page)")
    cmp_.add_argument("run_dirs", nargs="+", help="two or more run folders")
    cmp_.add_argument("-o", "--output", default="compare.html", help="the page to write (default compare.html)")
    cmp_.add_argument("--json", action="store_true", help="also print the comparison as one JSON object")

    rep = sub.add_parser("report", help="write RUN_DIR/report.html (self-contained) and RUN_DIR/plots/*.png for a training run")
    rep.add_argument("run_dir", help="the output_dir of a preftune train run")
    rep.add_argument("--open", action="store_true", help="open the report in the default browser")

    ev = sub.add_parser("eval", help="held-out preference accuracy, margins and length breakdown; optional generation, KL and judge",
                        description="Evaluate a model on preference pairs. --model: a Hugging Face folder, a LoRA adapter folder, a preftune "
                        "run folder, a .gguf file, or smollm2-135m-instruct. The reference is --reference, else an adapter's base, else a "
                        "run's start model, else none (the model's own log-probs are compared).")
    ev.add_argument("--model", required=True)
    ev.add_argument("--data", required=True, nargs="+", help="preference pairs (any format preftune train reads)")
    ev.add_argument("--reference", help="reference model (folder, .gguf, or smollm2-135m-instruct)")
    ev.add_argument("--no-reference", action="store_true", help="compare the model's own log-probs even when a reference is implied")
    ev.add_argument("--config", help="YAML config: its data (recipe, mapping, lengths) and generation sections apply")
    ev.add_argument("--beta", type=float, help="β of the implicit reward (default: a run folder's own loss β, else the config's, 0.1)")
    ev.add_argument("--max-pairs", type=int, help="evaluate the first N pairs only")
    ev.add_argument("--batch-size", type=int, default=8)
    ev.add_argument("--generate", action="store_true", help="also sample responses to the held-out prompts (generation section of the config)")
    ev.add_argument("--judge", help="module:function judge for rewards / win rates (implies --generate)")
    ev.add_argument("--judge-args", help="JSON object of keyword arguments for the judge, e.g. '{\"max_words\": 50}'")
    ev.add_argument("--output-dir", help="where eval.json and samples.jsonl go (default RUN/eval for a run folder, else runs/eval)")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.add_argument("overrides", nargs="*", help="KEY=VALUE config overrides, e.g. generation.max_new_tokens=64")

    exp = sub.add_parser("export", help="write a run's model (LoRA merged) as one GGUF file (llama.cpp, Ollama) or a merged Hugging Face folder")
    exp.add_argument("source", help="a preftune run folder, a model or adapter folder, a .gguf file, or smollm2-135m-instruct")
    exp.add_argument("--to", required=True, choices=("gguf", "hf"))
    exp.add_argument("--dtype", default="f16", help="gguf: f32, f16 or q8_0; hf: f32, f16 or bf16 (default f16)")
    exp.add_argument("-o", "--output", required=True, help="a .gguf file (--to gguf) or a folder (--to hf)")

    itr = sub.add_parser("iterate", help="on-policy rounds: sample (adaptive K), judge, pair (or keep correct samples), train, evaluate with standard errors (resumable)")
    itr.add_argument("config", nargs="?", help="YAML config with an iterate section")
    itr.add_argument("overrides", nargs="*")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status: 0, 2 for a usage or input error (the message names the file, flag or key
    and the fix), 130 when interrupted, 1 for an unexpected internal error (its traceback with -v)."""
    parser = build_parser()
    given = list(sys.argv[1:] if argv is None else argv)
    if any("\x00" in a for a in given):
        print("preftune: error: an argument holds a NUL byte, which no path, key or value can contain. Fix: remove it.", file=sys.stderr)
        return 2
    try:
        args = parse(parser, given)
    except SystemExit as e:  # argparse printed --help (0) or a usage error (2)
        return e.code if isinstance(e.code, int) else 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "filelock", "datasets", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        return COMMANDS[args.command](args)
    except PreftuneError as e:
        print(f"preftune: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("preftune: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - anything else is a bug: say so, without a wall of traceback unless asked
        if args.verbose:
            import traceback

            traceback.print_exc()
        print(f"preftune: internal error: {type(e).__name__}: {e}\nThis is a bug in preftune; run with -v for the traceback and report it.",
              file=sys.stderr)
        return 1


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """The parsed command line: positionals after options are config overrides (or, for data inspect, paths)."""
    args, extra = parser.parse_known_args(argv)
    if extra:  # positionals given after options (data inspect FILE --model M data.x=y)
        if args.command == "data":
            args.paths += extra
        elif args.command in ("train", "sft", "precompute-ref", "iterate", "eval") and not any(e.startswith("-") for e in extra):
            args.overrides += extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "config", None) and hasattr(args, "overrides") and "=" in args.config and not os.path.exists(args.config):
        args.overrides.insert(0, args.config)  # `preftune train key=value ...` with no config file
        args.config = None
    return args


class SummaryTable:
    """At the end of a run: the held-out metrics before and after, and where the model and report are."""

    def on_end(self, result) -> None:  # type: ignore[no-untyped-def]
        from rich.console import Console
        from rich.table import Table

        from .training.outputs import SUMMARY_KEYS

        console = Console(stderr=True)
        if result.interrupted:
            return
        if result.before or result.after:
            table = Table(title=f"held-out metrics after {result.steps} steps ({result.seconds:.0f} s)")
            for name, justify in (("metric", "left"), ("before", "right"), ("after", "right")):
                table.add_column(name, justify=justify)
            for k in SUMMARY_KEYS:
                if k in result.before or k in result.after:
                    b, a = result.before.get(k), result.after.get(k)
                    table.add_row(k, "" if b is None else f"{b:.4f}", "" if a is None else f"{a:.4f}")
            console.print(table)
        if "model" in result.paths:
            console.print(f"model saved to {result.paths['model']}")


def cmd_train(args: argparse.Namespace) -> int:
    from . import api

    run = api.sft if args.command == "sft" else api.train
    result = run(args.config, overrides=args.overrides, callbacks=[SummaryTable()], catch_interrupt=True)
    if "report" in result.paths:
        print(f"report: {result.paths['report']}", file=sys.stderr)
    return 130 if result.interrupted else 0


def cmd_precompute(args: argparse.Namespace) -> int:
    from .config import load_config
    from .training.setup import precompute_reference

    cfg = load_config(args.config, args.overrides)
    path = precompute_reference(cfg)
    print(f"reference log-probs cached at {path}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from .config import load_config
    from .models.embedded import EMBEDDED_NAME
    from .data.inspect import inspect_data, render_report

    overrides = [p for p in args.paths if "=" in p and p.split("=", 1)[0].startswith("data.")]
    paths = [p for p in args.paths if p not in overrides]
    if args.data_command == "doctor" and not 0 < args.near <= 1:
        raise ConfigError(f"--near {args.near}: a similarity in (0, 1]. Fix: e.g. --near 0.8.")
    cfg = load_config(args.config, overrides).data.settings(train=paths, eval=getattr(args, "eval", None))
    tokenizer = None
    model = args.model or (None if args.data_command == "inspect" or args.form_only else EMBEDDED_NAME)
    if model:
        from .models.loading import load_tokenizer

        tokenizer = load_tokenizer(model)
    if args.data_command == "doctor":
        return doctor(cfg, tokenizer, model, args)
    report = inspect_data(cfg, tokenizer)
    print(json.dumps(report, indent=None if args.json else 2) if args.json else render_report(report))
    return 0


def doctor(settings: Any, tokenizer: Any, model: str | None, args: argparse.Namespace) -> int:
    from .data.doctor import diagnose, render_summary
    from .report.doctor_page import write_doctor_page
    from .run_files import check_writable, write_json, write_jsonl

    out = Path(args.output)
    check_writable(out, "--output")
    report = diagnose(settings, tokenizer, args.near)
    out.mkdir(parents=True, exist_ok=True)
    if not args.form_only:
        from .data.doctor import load_pairs
        from .evaluation.label_noise import CrossFit, merge_model_checks, model_checks

        if args.folds < 2 or args.steps < 1:
            raise ConfigError(f"--folds {args.folds} --steps {args.steps}: cross-fitting needs at least 2 folds and 1 step. Fix: e.g. --folds 5 --steps 30.")
        crossfit = CrossFit(args.folds, args.steps, args.seed, tuple(args.fold_overrides))
        pairs, _ = load_pairs(settings.train, settings)
        merge_model_checks(report, model_checks(pairs, model, out / "model_checks", crossfit, args.config), crossfit)
    write_jsonl(out / "doctor.jsonl", report["records"], ensure_ascii=False)
    write_json(out / "doctor_summary.json", report["summary"])
    page = write_doctor_page(report, out / "doctor.html")
    print(json.dumps(report["summary"]) if args.json else render_summary(report))
    if not args.json:
        print(f"records: {out / 'doctor.jsonl'}\nsummary: {out / 'doctor_summary.json'}\npage: {page}\n"
              f"to train without the pairs marked to exclude: data.filters.exclude_from=[{out / 'doctor.jsonl'}]")
    return 0


def cmd_losses(args: argparse.Namespace) -> int:
    from .losses import LOSSES

    for name, text in LOSSES.items():
        print(f"{name:10s} {text}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from .sweeping import sweep

    summary = sweep(args.config, args.space, args.output, overrides=args.overrides, progress=True)
    print("trials: " + ", ".join(f"{n} {state}" for state, n in sorted(summary["trials"].items())))
    if "best" in summary:
        b = summary["best"]
        print(f"best: trial {b['trial']}, {b['value']:.4f} with " + ", ".join(f"{k}={v}" for k, v in b["params"].items()))
    for number, error in summary.get("failed", {}).items():
        print(f"trial {number} failed: {error.splitlines()[0] if error else 'see its folder'}")
    for name, path in summary["files"].items():
        print(f"{name}: {path}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .report.compare import write_compare

    path, data = write_compare(args.run_dirs, args.output)
    if args.json:
        print(json.dumps(data))
        return 0
    for r in data["runs"]:
        h = r["held_out"]
        acc = f"accuracy {h['accuracy']:.3f} ± {h['accuracy_stderr']:.3f} ({h['pairs']} pairs)" if "accuracy" in h else "no held-out pairs"
        print(f"{r['name']}: {acc}; diagnostics: {', '.join(r['diagnostics']) or 'none'}")
        for a in r["advice"]:
            print(f"  advice: {a}")
    for p in data["paired"]:
        if p["shared_pairs"]:
            print(f"{p['run']} − {p['against']}: {p['difference']:+.3f} [{p['low']:+.3f}, {p['high']:+.3f}] over {p['shared_pairs']} shared pairs")
    print("settings that differ: " + (", ".join(data["differing"]) or "none"))
    print(f"page written to {path}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    page = write_report(args.run_dir)
    print(f"report written to {page}")
    if args.open:
        import webbrowser

        webbrowser.open(page.resolve().as_uri())
    return 0


def cmd_eval(args: argparse.Namespace) -> int:

    from . import api
    from .config import JudgeConfig, load_config
    from .errors import ConfigError

    cfg = load_config(args.config, args.overrides)
    judge = None
    if args.judge_args and not args.judge:
        raise ConfigError("--judge-args: given without --judge. Fix: name the judge (--judge module:function), or drop --judge-args.")
    if args.judge:
        try:
            judge_args = json.loads(args.judge_args) if args.judge_args else {}
        except json.JSONDecodeError as e:
            raise ConfigError(f"--judge-args: not valid JSON ({e.msg}). Fix: pass an object, e.g. '{{\"max_words\": 50}}'.") from None
        if not isinstance(judge_args, dict):
            raise ConfigError("--judge-args: must be a JSON object of keyword arguments.")
        judge = JudgeConfig(name=args.judge, args=judge_args)
    data = args.data[0] if len(args.data) == 1 else args.data
    result = api.evaluate(args.model, data, reference=args.reference, beta=args.beta, config=cfg, reference_free=args.no_reference,
                          batch_size=args.batch_size, max_pairs=args.max_pairs, generate=args.generate, judge=judge,
                          output_dir=Path(args.output_dir) if args.output_dir else api.DEFAULT_EVAL_DIR, progress=not args.json)
    print(json.dumps(result) if args.json else render_eval(result))
    return 0


def render_eval(result: dict) -> str:
    """The eval result as a few readable lines."""
    p = result["preference"]
    f = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = [f"model: {result['model']}   reference: {result['reference'] or 'none (own log-probs)'}   loss: {result['loss']}   β = {result['beta']}",
             f"pairs: {p['pairs']}   accuracy: {f(p['rewards/accuracies'])}   margin: {f(p['rewards/margins'])}   "
             f"per-token accuracy: {f(p['accuracy_per_token'])}"]
    if "logratios/chosen" in p:
        lines.append(f"log-ratios  chosen: {f(p['logratios/chosen'])}   rejected: {f(p['logratios/rejected'])}")
    lines.append(f"length bias  prefers longer: {f(p['prefers_longer'])}   corr(margin, length diff): {f(p['margin_length_correlation'])}")
    for name, g in p["by_length"].items():
        lines.append(f"  {name:15s} pairs {g['pairs']:5d}   accuracy {f(g['rewards/accuracies'])}   margin {f(g['rewards/margins'])}")
    g = result.get("generation")
    if g:
        ln = g["length_tokens"]
        lines.append(f"generation  prompts {g['prompts']}  samples {g['samples']}  length mean {f(ln.get('mean'))}  median {f(ln.get('median'))}  "
                     f"truncated {f(ln.get('truncated_fraction'))}")
        if "kl" in g:
            lines.append(f"  KL(policy ‖ reference) ≈ {f(g['kl']['estimate'])} ± {f(g['kl']['stderr'])} nats per response")
        if "judge" in g:
            lines.append("  judge " + "  ".join(f"{k}: {f(v)}" for k, v in g["judge"].items()))
    if "files" in result:
        lines.append("written: " + ", ".join(result["files"].values()))
    return "\n".join(lines)


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export

    path = export(args.source, args.to, args.output, args.dtype)
    print(f"exported to {path}")
    return 0


def cmd_iterate(args: argparse.Namespace) -> int:
    from .api import iterate_rounds
    from .config import load_config

    cfg = load_config(args.config, args.overrides)
    summaries = iterate_rounds(cfg)
    for s in summaries:
        line = f"round {s['round']}: greedy judge mean {s['greedy_judge_mean']:.4f} ± {s.get('greedy_judge_stderr', float('nan')):.4f}"
        if "sampling" in s:
            line += f"  ({s['sampling'].get('pairs', s['sampling'].get('examples'))} {'pairs' if 'pairs' in s['sampling'] else 'examples'}"
            line += f", KL to start {s['kl_to_start']['estimate']:.2f})" if "kl_to_start" in s else ")"
        print(line)
    if cfg.report:
        print(f"report: {Path(cfg.output_dir or '.') / 'report.html'}")
    return 0


COMMANDS = {"sweep": cmd_sweep, "compare": cmd_compare, "sft": cmd_train, "export": cmd_export, "eval": cmd_eval, "iterate": cmd_iterate, "report": cmd_report, "train": cmd_train, "precompute-ref": cmd_precompute, "data": cmd_data, "losses": cmd_losses}

if __name__ == "__main__":
    raise SystemExit(main())
