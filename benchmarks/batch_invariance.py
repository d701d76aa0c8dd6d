"""How far an example's value moves with the batch it is estimated in, against another version.

For the convolutional VAE of ``encoder=conv decoder=conv`` (random weights, seed 0) on
``--examples`` binarized digits of the embedded MNIST test split, each source tree (this
checkout, and ``--baseline-src``, for example a ``git worktree`` of an earlier commit) estimates
every example with each batch size of ``--batch-sizes``, and once more with the even and the odd
examples estimated apart (every example at another place in its batch), by importance sampling
(K = ``--k``) and by AIS (``--ais-chains`` chains, ``--ais-steps`` steps, from the encoder).
Printed per tree and estimator: the spread (largest over examples of max - min across those
runs, nats; 0 means bit for bit equal) and the seconds of all the calls, with the ratio this /
baseline (of little meaning: the runs differ in how many examples they fill blocks with).

    git worktree add /tmp/baseline <commit>
    python benchmarks/batch_invariance.py --baseline-src /tmp/baseline/src
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1] / "src"

CHILD = """
import json, sys, time, torch
from hydra import compose, initialize_config_dir
import vaelik
from vaelik.config import config_dir
from vaelik.data.embedded import EmbeddedMNIST
from vaelik.models.factory import build_model
examples, k, chains, steps = (int(v) for v in sys.argv[1:5])
batch_sizes = [int(v) for v in sys.argv[5].split(",")]
torch.set_num_threads(1)
torch.manual_seed(0)
with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
    cfg = compose("train", overrides=["encoder=conv", "decoder=conv", "paths.output_dir=out"])
model = build_model(cfg, "binary").eval()
x = (EmbeddedMNIST().load("test")[:examples].float() / 255 > 0.5).float()
estimators = {
    "importance": vaelik.make_estimator("importance", num_samples=k),
    "ais": vaelik.make_estimator("ais", num_samples=chains, num_steps=steps, prior_share=0.0),
}
out = {}
for name, estimator in estimators.items():
    values, start = [], time.perf_counter()
    for batch in batch_sizes:
        values.append(vaelik.estimate(model, x, estimator=estimator, batch_size=batch).log_px)
    halves = [  # the even and the odd examples apart: every example elsewhere in its batch
        vaelik.estimate(model, x, estimator=estimator, examples=range(first, examples, 2)).log_px
        for first in (0, 1)
    ]
    values.append(torch.stack(halves, 1).flatten()[:examples])
    values = torch.stack(values)
    spread = (values.max(0).values - values.min(0).values).max().item()
    out[name] = {"spread": spread, "seconds": time.perf_counter() - start}
print(json.dumps(out))
"""


def measure(src: Path, args: argparse.Namespace) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-c",
        CHILD,
        str(args.examples),
        str(args.k),
        str(args.ais_chains),
        str(args.ais_steps),
        args.batch_sizes,
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-src", type=Path, required=True)
    parser.add_argument("--src", type=Path, default=HERE, help="this tree (default: checkout)")
    parser.add_argument("--examples", type=int, default=20)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--ais-chains", type=int, default=4)
    parser.add_argument("--ais-steps", type=int, default=50)
    parser.add_argument("--batch-sizes", default="1,2,5,20")
    args = parser.parse_args()
    results = {"baseline": measure(args.baseline_src, args), "this": measure(args.src, args)}
    print(
        f"conv VAE, {args.examples} images, batch sizes {args.batch_sizes} and the even and odd "
        "examples apart; spread = largest max - min of an example's value across them (nats)"
    )
    print("| estimator | baseline spread | this spread | baseline s | this s | ratio |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in results["this"]:
        before, after = results["baseline"][name], results["this"][name]
        print(
            f"| {name} | {before['spread']:.3g} | {after['spread']:.3g} | "
            f"{before['seconds']:.1f} | {after['seconds']:.1f} | "
            f"{after['seconds'] / before['seconds']:.2f} |"
        )


if __name__ == "__main__":
    main()
