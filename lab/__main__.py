"""Command line of the experiments: `python -m lab simulate` (learning curves, `lab/simulator.py`),
`python -m lab consensus` (simulated annotators on tweets, `lab/annotators.py`), `python -m lab
mislabels` (label-error suspects against flipped labels, `lab/label_errors.py`)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def _strategies(text: str) -> str:
    from .simulator import parse_strategies

    try:
        parse_strategies(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _shares(text: str) -> dict[str, float]:
    from .datasets import parse_shares

    try:
        return parse_shares(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def simulate(args: argparse.Namespace) -> int:
    from .simulator import simulate as run

    summary = run(
        args.dataset,
        args.strategy,
        args.budget,
        args.batch,
        args.seeds,
        Path(args.out),
        jobs=args.jobs,
        class_share=args.class_share,
        rules_file=args.rules,
    )
    print(json.dumps(summary, indent=2))
    return 0


def consensus(args: argparse.Namespace) -> int:
    from .annotators import consensus_cost, consensus_report

    print(json.dumps(consensus_cost(args.cost) if args.cost else consensus_report(args.tasks, args.held_out), indent=2))
    return 0


def label_errors(args: argparse.Namespace) -> int:
    from .label_errors import flipped_report

    print(json.dumps(flipped_report(), indent=2))
    return 0


def span_curves(args: argparse.Namespace) -> int:
    from .span_simulator import simulate as simulate_spans

    strategies = [s.strip() for s in args.strategy.split(",") if s.strip()]
    print(json.dumps(simulate_spans(args.budget, args.batch, args.seeds, args.out, strategies), indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("simulate", help="learning curves of a strategy against random order")
    p.add_argument("--dataset", default="tweets", help="tweets, or a CSV/JSON file of text,label")
    p.add_argument(
        "--strategy",
        default="default",
        type=_strategies,
        help="a strategy or a comma-separated list, each base[:key=value...] (see lab/simulator.py Variant)",
    )
    p.add_argument("--class-share", type=_shares, default={}, help="thin classes to these shares of the data set, e.g. positive=0.08")
    p.add_argument("--rules", help="a JSON file of labeling rules for the variants with the `rules` option (backend/rules.py)")
    p.add_argument("--budget", type=int, default=1500)
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--out", default="simulation")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="runs in parallel (forked processes)")
    p.set_defaults(func=simulate)
    p = sub.add_parser("consensus", help="three simulated annotators (one poor) on tweets: each consensus method's labels and model")
    p.add_argument("--tasks", type=int, default=3000)
    p.add_argument("--held-out", type=int, default=2000)
    p.add_argument("--cost", type=int, default=0, help="instead: seconds and memory of each method over this many tasks")
    p.set_defaults(func=consensus)
    p = sub.add_parser("spans", help="span learning curves on WNUT-16: the product's queue against random order")
    p.add_argument("--budget", type=int, default=400)
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--strategy", default="default", help="default, default:cold=K/N, or a comma-separated list (random always runs)")
    p.add_argument("--out", default="simulation-spans")
    p.set_defaults(func=span_curves)
    p = sub.add_parser("mislabels", help="label-error suspects on tweets with 10% of labels flipped, at 200, 1,000 and 5,000 labels")
    p.set_defaults(func=label_errors)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
