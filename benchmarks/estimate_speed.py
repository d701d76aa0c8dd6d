"""``vaelik.estimate``'s speed against another version of vaelik, in one run.

The same calls, in fresh processes that alternate between this checkout and a baseline source
tree (``--baseline-src``, for example a ``git worktree`` of an earlier commit), so that drifts of
this shared machine hit both alike: on the quick-start architecture (an MLP VAE, 784 binary
pixels, 32 latent dimensions, random weights), importance sampling with K = ``--k`` over
``--examples`` images, and AIS (``--ais-chains`` chains, ``--ais-steps`` steps) over a tenth of
them. Each process times the calls alone (after one warm-up call), not its start-up; the median
over ``--repeats`` processes of each tree is reported, with the ratio this / baseline.

    git worktree add /tmp/baseline <commit>
    python benchmarks/estimate_speed.py --baseline-src /tmp/baseline/src --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1] / "src"

CHILD = """
import json, sys, time, torch
from torch import nn
import vaelik
from vaelik.adapters import from_functions
k, examples, chains, steps = (int(v) for v in sys.argv[1:5])
torch.manual_seed(0)
torch.set_num_threads(1)
enc = nn.Sequential(nn.Linear(784, 500), nn.Tanh(), nn.Linear(500, 64))
dec = nn.Sequential(nn.Linear(32, 500), nn.Tanh(), nn.Linear(500, 784))
model = from_functions(lambda x: enc(x).chunk(2, -1), dec, "bernoulli", latent_dim=32,
                       modules=[enc, dec])
x = (torch.rand(examples, 784) < 0.3).float()
def run():
    start = time.perf_counter()
    a = vaelik.estimate(model, x, estimator="importance", num_samples=k)
    middle = time.perf_counter()
    b = vaelik.estimate(model, x[: max(1, examples // 10)],
                        estimator=vaelik.make_estimator("ais", num_samples=chains, num_steps=steps))
    end = time.perf_counter()
    return middle - start, end - middle, a.summary["log_px_mean"], b.summary["log_px_mean"]
run()
print(json.dumps(run()))
"""


def child(src: Path, args: argparse.Namespace) -> list[float]:
    """One process on the vaelik of ``src``: [IS seconds, AIS seconds, IS mean, AIS mean]."""
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    settings = [str(v) for v in (args.k, args.examples, args.ais_chains, args.ais_steps)]
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *settings],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-src", required=True, type=Path)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--examples", type=int, default=100)
    parser.add_argument("--ais-chains", type=int, default=8)
    parser.add_argument("--ais-steps", type=int, default=50)
    args = parser.parse_args()
    figures: dict[str, list[list[float]]] = {"this": [], "baseline": []}
    for _ in range(args.repeats):
        figures["this"].append(child(HERE, args))
        figures["baseline"].append(child(args.baseline_src, args))
    for column, name in ((0, "importance"), (1, "ais")):
        this = statistics.median(run[column] for run in figures["this"])
        base = statistics.median(run[column] for run in figures["baseline"])
        print(
            f"{name:>10}: this {this:.3f} s, baseline {base:.3f} s (medians of "
            f"{args.repeats}), ratio {this / base:.3f}"
        )
    same = [a[2:] == b[2:] for a, b in zip(figures["this"], figures["baseline"], strict=True)]
    print(f"same values as the baseline, bit for bit: {all(same)}")


if __name__ == "__main__":
    main()
