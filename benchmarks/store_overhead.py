"""What the results store costs, and what it saves when a run is resumed, in one run.

On the quick-start architecture (an MLP VAE, 784 binary pixels, 32 latent dimensions, random
weights), importance sampling with K = ``--k`` over ``--examples`` images, in fresh processes
(one thread each) that alternate between three calls, ``--repeats`` times:

- ``plain``: ``vaelik.estimate`` without a store;
- ``store``: the same call with a new, empty store (every batch committed): its time over
  ``plain`` is the store's overhead;
- ``resume``: the same call on a store that already holds the first half of the examples (a run
  killed at half its time): its time over ``plain`` is what a resume costs.

Medians are printed with the ratios, and whether the three gave the same values bit for bit.

    python benchmarks/store_overhead.py --k 5000 --examples 500 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1] / "src"

CHILD = """
import json, sys, time, torch
from torch import nn
import vaelik
from vaelik.adapters import from_functions
mode, k, examples, store = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.manual_seed(0)
torch.set_num_threads(1)
enc = nn.Sequential(nn.Linear(784, 500), nn.Tanh(), nn.Linear(500, 64))
dec = nn.Sequential(nn.Linear(32, 500), nn.Tanh(), nn.Linear(500, 784))
model = from_functions(lambda x: enc(x).chunk(2, -1), dec, "bernoulli", latent_dim=32,
                       modules=[enc, dec])
x = (torch.rand(examples, 784) < 0.3).float()
if mode == "resume":  # the first half, as a run killed at half its time left it
    vaelik.estimate(model, x, num_samples=k, examples=range(examples // 2), store=store)
start = time.perf_counter()
estimates = vaelik.estimate(model, x, num_samples=k, store=None if mode == "plain" else store)
seconds = time.perf_counter() - start
print(json.dumps([seconds, estimates.log_px.tolist()]))
"""


def child(mode: str, args: argparse.Namespace, folder: Path, run: int) -> list:
    env = {**os.environ, "PYTHONPATH": str(args.src), "OMP_NUM_THREADS": "1"}
    store = folder / f"{mode}-{run}.sqlite"
    done = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(args.k), str(args.examples), str(store)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=HERE)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--k", type=int, default=5000)
    parser.add_argument("--examples", type=int, default=500)
    args = parser.parse_args()
    modes = ("plain", "store", "resume")
    runs: dict[str, list] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory() as folder:
        for run in range(args.repeats):
            for mode in modes:
                runs[mode].append(child(mode, args, Path(folder), run))
    seconds = {mode: statistics.median(r[0] for r in runs[mode]) for mode in modes}
    print(f"IS K={args.k} on {args.examples} images, medians of {args.repeats} (one thread):")
    for mode in modes:
        ratio = seconds[mode] / seconds["plain"]
        print(f"{mode:>7}: {seconds[mode]:.2f} s, ratio to plain {ratio:.3f}")
    same = all(r[1] == runs["plain"][0][1] for mode in modes for r in runs[mode])
    print(f"same values in all three, bit for bit: {same}")


if __name__ == "__main__":
    main()
