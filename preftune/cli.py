"""The `preftune` command: train, precompute-ref, data inspect, losses, report."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

from .errors import PreftuneError

TRAIN_EPILOG = "Overrides: any config key as KEY=VALUE, e.g. train.max_steps=5 loss.name=dpop model.lora.enabled=true"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="preftune", description="Align causal language models with preference pairs (DPO and its family).")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    from .config import describe_keys

    keys = "\n".join("  " + k for k in describe_keys())
    train = sub.add_parser("train", help="train a model on preference pairs", formatter_class=argparse.RawDescriptionHelpFormatter,
                           description=f"Train from CONFIG.yaml.\n\nConfig keys and defaults:\n{keys}", epilog=TRAIN_EPILOG)
    train.add_argument("config", nargs="?", help="YAML config (defaults when omitted)")
    train.add_argument("overrides", nargs="*", help="KEY=VALUE overrides")

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

    sub.add_parser("losses", help="list the losses in the registry")

    rep = sub.add_parser("report", help="write RUN_DIR/report.html (self-contained) and RUN_DIR/plots/*.png for a training run")
    rep.add_argument("run_dir", help="the output_dir of a preftune train run")
    rep.add_argument("--open", action="store_true", help="open the report in the default browser")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # positionals given after options (data inspect FILE --model M data.x=y)
        if args.command == "data":
            args.paths += extra
        elif args.command in ("train", "precompute-ref") and not any(e.startswith("-") for e in extra):
            args.overrides += extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "config", None) and "=" in args.config and not os.path.exists(args.config):
        args.overrides.insert(0, args.config)  # `preftune train key=value ...` with no config file
        args.config = None
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


def cmd_train(args: argparse.Namespace) -> int:
    from .config import load_config
    from .train.run import train

    cfg = load_config(args.config, args.overrides)
    result = train(cfg)
    return 130 if result.interrupted else 0


def cmd_precompute(args: argparse.Namespace) -> int:
    from .config import load_config
    from .train.run import precompute_reference

    cfg = load_config(args.config, args.overrides)
    path = precompute_reference(cfg)
    print(f"reference log-probs cached at {path}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from .config import load_config
    from .data.inspect import inspect_data, render_report

    overrides = [p for p in args.paths if "=" in p and p.split("=", 1)[0].startswith("data.")]
    paths = [p for p in args.paths if p not in overrides]
    cfg = load_config(args.config, overrides).data
    tokenizer = None
    if args.model:
        from .models.loading import load_tokenizer

        tokenizer = load_tokenizer(args.model)
    report = inspect_data(paths, cfg, tokenizer)
    print(json.dumps(report, indent=None if args.json else 2) if args.json else render_report(report))
    return 0


def cmd_losses(args: argparse.Namespace) -> int:
    from .losses import LOSSES

    for name, text in LOSSES.items():
        print(f"{name:10s} {text}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    page = write_report(args.run_dir)
    print(f"report written to {page}")
    if args.open:
        import webbrowser

        webbrowser.open(page.resolve().as_uri())
    return 0


COMMANDS = {"report": cmd_report, "train": cmd_train, "precompute-ref": cmd_precompute, "data": cmd_data, "losses": cmd_losses}

if __name__ == "__main__":
    raise SystemExit(main())
