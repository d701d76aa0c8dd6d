"""Estimators against an exact reference: the error of each ``vaelik-eval`` run, per example.

Evaluate the same examples of a model with a 2-D latent once by quadrature and once by each
estimator, then compare (the "Every estimator against the exact answer" table of docs/results.md):

    C=outputs/train/runs/<run of vaelik-train latent_dim=2>/checkpoints/last.ckpt
    for e in quadrature importance ais; do
        .venv/bin/vaelik-eval ckpt_path=$C num_examples=500 estimator=$e hydra.run.dir=acc/$e
    done
    .venv/bin/vaelik-eval ckpt_path=$C num_examples=500 estimator=prior \\
        estimator.num_samples=100000 hydra.run.dir=acc/naive
    python benchmarks/estimator_accuracy.py --reference acc/quadrature \\
        acc/naive acc/importance acc/ais

The reference may also be another model evaluated on the same examples: the mean error is then
the paired change in log p(x), as in the ablation of the paper-faithful HVAE (docs/results.md).

Prints a markdown table (mean with its paired standard error, median, best and worst error in
nats, how many examples are more than a nat low and how many of those the estimator flagged, the
flagged share, seconds per example; ``--seconds-from`` takes them from a separate timing pass)
and, with ``--json`` or ``--csv``, writes its rows; ``--plot`` draws each run's mean and worst
error against its seconds per example (log axis), the accuracy-per-second picture of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vaelik.evaluation.accuracy import (
    EvaluationRun,
    accuracy_row,
    accuracy_table,
    plot_accuracy_against_time,
    write_rows,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", required=True, help="folder of the exact run")
    parser.add_argument("runs", nargs="+", help="folders of the runs to hold against it")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--csv", type=Path, help="also write the rows here, as CSV")
    parser.add_argument("--plot", type=Path, help="also draw accuracy against time (PNG)")
    parser.add_argument(
        "--seconds-from",
        type=Path,
        help="take each run's seconds per example from the run of the same name in this folder "
        "(a timing pass on an idle thread), not from the run itself",
    )
    args = parser.parse_args()
    reference = EvaluationRun.read(args.reference)
    rows = [accuracy_row(EvaluationRun.read(folder), reference) for folder in args.runs]
    if args.seconds_from:
        for row in rows:
            row["seconds_per_example"] = EvaluationRun.read(
                args.seconds_from / row["run"]
            ).seconds_per_example
    print(accuracy_table(rows, reference))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if args.csv:
        write_rows(rows, args.csv)
    if args.plot:
        plot_accuracy_against_time(rows, reference, args.plot)


if __name__ == "__main__":
    main()
