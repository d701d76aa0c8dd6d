"""What ``import vaelik`` and a first ``vaelik.estimate`` cost, against ``import torch``.

Each figure is a fresh Python process (``python -c ...``), timed from its start to its exit, run
``--repeats`` times in alternation with the baseline so that drifts of this shared machine hit
both alike; the median of each is reported, and the median of the ratios of each run to the
baseline run beside it:

- torch: ``import torch`` (the baseline: vaelik cannot cost less);
- import vaelik: ``import torch, vaelik``;
- estimate: ``import vaelik``, a plain PyTorch VAE of 784 pixels wrapped by
  ``vaelik.adapters.from_functions``, and ``vaelik.estimate`` on 20 images with K = 100 (what a
  user's first call costs, the import included).

Each child also reports which heavy packages it loaded (Lightning, Hydra, OmegaConf,
torchvision, wandb, matplotlib, scipy): the library layer needs none of them.

``--src`` measures the vaelik of another source tree (a ``git worktree`` of an earlier commit).

    python benchmarks/import_cost.py --repeats 7 --csv docs/benchmarks/import_cost.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time

HEAVY = ("lightning", "hydra", "omegaconf", "torchvision", "wandb", "matplotlib", "scipy")

REPORT = (
    "import sys, json; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & "
    f"set({HEAVY!r}))))"
)

PROGRAMS = {
    "torch": "import torch; " + REPORT,
    "import vaelik": "import torch, vaelik; " + REPORT,
    "estimate": (
        "import torch; from torch import nn; import vaelik; "
        "from vaelik.adapters import from_functions; "
        "enc = nn.Sequential(nn.Linear(784, 200), nn.Tanh(), nn.Linear(200, 16)); "
        "dec = nn.Sequential(nn.Linear(8, 200), nn.Tanh(), nn.Linear(200, 784)); "
        "model = from_functions(lambda x: enc(x).chunk(2, -1), dec, 'bernoulli', latent_dim=8, "
        "modules=[enc, dec]); "
        "x = (torch.rand(20, 784) < 0.3).float(); "
        "vaelik.estimate(model, x, num_samples=100); " + REPORT
    ),
}


def timed(program: str, src: str | None) -> tuple[float, list[str]]:
    """Seconds from the start of a fresh interpreter running ``program`` (with vaelik from
    ``src`` where given) to its exit, and the heavy packages it reported loaded."""
    env = {**os.environ, **({"PYTHONPATH": src} if src else {})}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, env=env
    )
    seconds = time.perf_counter() - start
    return seconds, json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--src", help="the source tree whose vaelik to measure")
    parser.add_argument("--csv", help="write the figures to this CSV file")
    args = parser.parse_args()
    for program in PROGRAMS.values():  # warm the file cache
        timed(program, args.src)
    seconds: dict[str, list[float]] = {name: [] for name in PROGRAMS}
    loaded: dict[str, list[str]] = {}
    for _ in range(args.repeats):
        for name, program in PROGRAMS.items():
            taken, heavy = timed(program, args.src)
            seconds[name].append(taken)
            loaded[name] = heavy
    rows = []
    for name in PROGRAMS:
        median = statistics.median(seconds[name])
        pairs = zip(seconds[name], seconds["torch"], strict=True)
        ratio = statistics.median(taken / torch for taken, torch in pairs)
        rows.append(
            {
                "what": name,
                "median_s": round(median, 3),
                "min_s": round(min(seconds[name]), 3),
                "max_s": round(max(seconds[name]), 3),
                "ratio_to_torch": round(ratio, 3),
                "heavy_packages_loaded": " ".join(loaded[name]) or "none",
            }
        )
        print(
            f"{name:>14}: median {median:.2f} s (min {min(seconds[name]):.2f}, max "
            f"{max(seconds[name]):.2f}), {ratio:.2f}x import torch (median of paired ratios); "
            f"heavy packages loaded: {', '.join(loaded[name]) or 'none'}"
        )
    if args.csv:
        with open(args.csv, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
