"""AIS speed against an earlier vaelik: the same models, examples and random streams, in one run.

For each model (an experiment's architecture with random weights, or a checkpoint given as
``name=path``), AIS runs at the estimator's defaults (or ``--steps``, ``--chains``) on the same
binary test images twice: with this checkout's vaelik and with the vaelik of ``--baseline`` (a
git revision, checked out into a temporary worktree). Each run is a fresh process on
``--threads`` threads; the two alternate ``--repeats`` times and the best time of each is kept,
so that a machine whose speed drifts slows both alike. Printed per model: seconds per image of
each, their ratio, and the largest difference between the two runs' per-example estimates
(the same per-example random streams: the values must agree to float rounding).

Also printed: the *matrix-product floor*, the seconds per image that the decoder's matrix
products alone take, forward and backward, once per leapfrog step of every chain, timed in this
checkout's process on the same threads at the same rows per pass. No AIS with that many
leapfrog steps in float32 can run faster on this machine, so ``baseline / floor`` bounds the
speed-up any change keeping the values could reach.

    python benchmarks/ais_speed.py --baseline 182a1d1 --threads 1 \\
        --model bmnist_vae_paper --model bmnist_vampprior_paper --model binarized_mnist

The test images are the embedded digits, thresholded (no download), or with ``--data-dir`` the
binarized MNIST test set.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def load_model(spec: str):
    """An experiment's model with random weights (seed 0), or ``name=path``: a checkpoint's."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from vaelik.checkpoint import load_weights, read_checkpoint
    from vaelik.config import config_dir
    from vaelik.models.factory import build_model

    if "=" in spec:
        checkpoint = read_checkpoint(spec.split("=", 1)[1])
        model = build_model(OmegaConf.create(checkpoint.config), "binary")
        load_weights(model, checkpoint)
        return model.eval()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", [f"experiment={spec}", "paths.output_dir=unused"])
    torch.manual_seed(0)
    return build_model(cfg, "binary").eval()


def test_images(data_dir: str | None, count: int) -> torch.Tensor:
    """``count`` binary test images spread over the split ``[count, 1, 28, 28]``."""
    if data_dir:
        from vaelik.data import BinarizedMNIST

        images = BinarizedMNIST(data_dir, download=False).load("test").float()
    else:
        from vaelik.data import EmbeddedMNIST

        images = (EmbeddedMNIST().load("test").float() >= 128).float()
    return images[torch.linspace(0, len(images) - 1, count).long()]


def matrix_product_floor(model, rows: int, gradients_per_image: int, repeats: int = 50) -> float:
    """Seconds per image of the decoder's matrix products alone: each linear layer's product
    ``[rows, in] @ [in, out]`` forward and ``[rows, out] @ [out, in]`` backward, in float32,
    ``gradients_per_image`` times per image (chains x steps x leapfrog steps), at ``rows``
    (chain, example) pairs per pass; the best of 3 timings of ``repeats`` passes."""
    weights = [m.weight.detach() for m in model.decoder.modules() if isinstance(m, torch.nn.Linear)]
    inputs = [torch.randn(rows, w.shape[1]) for w in weights]
    grads = [torch.randn(rows, w.shape[0]) for w in weights]

    def passes() -> None:
        for _ in range(repeats):
            for w, h, g in zip(weights, inputs, grads, strict=True):
                torch.mm(h, w.t())
                torch.mm(g, w)

    passes()  # warm-up
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        passes()
        best = min(best, time.perf_counter() - start)
    return best / (repeats * rows) * gradients_per_image


def child(args: argparse.Namespace) -> None:
    """One timed AIS run; prints a JSON line (seconds per image, per-example log p(x))."""
    import vaelik
    from vaelik import make_estimator

    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    x = test_images(args.data_dir, args.examples)
    settings = {"num_steps": args.steps} if args.steps else {}
    settings |= {"num_samples": args.chains} if args.chains else {}
    estimator = make_estimator("ais", **settings)
    plan = vaelik.resolve(model, estimator)  # from the encoder, or where AIS's rule says
    index = torch.arange(len(x))
    estimator.log_weights(plan, x[:1], index[:1])  # warm-up
    start = time.perf_counter()
    log_w = estimator.log_weights(plan, x, index)
    seconds = time.perf_counter() - start
    log_px = torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])
    measured = {
        "vaelik": str(Path(vaelik.__file__).parent),
        "seconds_per_image": seconds / len(x),
        "log_px": log_px.tolist(),
        "num_steps": estimator.num_steps,
        "num_chains": estimator.num_samples,
    }
    if args.floor:
        from vaelik.inference.log_weights import default_chunk_size

        rows = min(default_chunk_size(torch.device("cpu")), len(x) * estimator.num_samples)
        gradients = estimator.num_samples * estimator.num_steps * estimator.leapfrog_steps
        measured["floor_s_per_image"] = matrix_product_floor(model, rows, gradients)
    print(json.dumps(measured))


def run_child(args: argparse.Namespace, model: str, source: Path, floor: bool = False) -> dict:
    """A fresh process running :func:`child` with the vaelik under ``source`` (a ``src``);
    ``floor``: also time the matrix-product floor."""
    command = [
        sys.executable,
        __file__,
        "--child",
        "--model",
        model,
        "--threads",
        str(args.threads),
    ]
    command += ["--examples", str(args.examples)]
    command += ["--steps", str(args.steps)] if args.steps else []
    command += ["--chains", str(args.chains)] if args.chains else []
    command += ["--data-dir", args.data_dir] if args.data_dir else []
    command += ["--floor"] if floor else []
    env = dict(os.environ, PYTHONPATH=str(source), OMP_NUM_THREADS=str(args.threads))
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode:
        raise SystemExit(f"{model} with {source} failed:\n{result.stderr[-3000:]}")
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    if Path(measured["vaelik"]).resolve() != (source / "vaelik").resolve():
        raise SystemExit(f"the run meant for {source} imported {measured['vaelik']}")
    return measured


def compare(args: argparse.Namespace, model: str, baseline_src: Path) -> dict:
    """Alternate the baseline and this checkout ``--repeats`` times on ``model``."""
    runs: dict[str, list[dict]] = {"baseline": [], "current": []}
    for _ in range(args.repeats):
        runs["baseline"].append(run_child(args, model, baseline_src))
        runs["current"].append(run_child(args, model, ROOT / "src", floor=True))
    best = {name: min(r["seconds_per_image"] for r in found) for name, found in runs.items()}
    old, new = runs["baseline"][0]["log_px"], runs["current"][0]["log_px"]
    floor = min(r["floor_s_per_image"] for r in runs["current"])
    return {
        "model": model.split("=")[0],
        "examples": args.examples,
        "chains": runs["current"][0]["num_chains"],
        "steps": runs["current"][0]["num_steps"],
        "baseline_s_per_image": round(best["baseline"], 3),
        "current_s_per_image": round(best["current"], 3),
        "speedup": round(best["baseline"] / best["current"], 2),
        "floor_s_per_image": round(floor, 3),
        "speedup_bound": round(best["baseline"] / floor, 2),
        "max_abs_difference": max(abs(a - b) for a, b in zip(old, new, strict=True)),
        "log_px_mean": sum(new) / len(new),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", default="182a1d1", help="git revision to compare with")
    parser.add_argument("--model", action="append", help="experiment, or name=checkpoint")
    parser.add_argument("--examples", type=int, default=16)
    parser.add_argument("--steps", type=int, default=None, help="default: the estimator's")
    parser.add_argument("--chains", type=int, default=None, help="default: the estimator's")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--data-dir", default=None, help="binarized MNIST (default: embedded)")
    parser.add_argument("--csv", type=Path, help="also write the table here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--floor", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    models = args.model or ["bmnist_vae_paper", "bmnist_vampprior_paper", "binarized_mnist"]
    if args.child:
        args.model = models[0]
        return child(args)
    with tempfile.TemporaryDirectory() as folder:
        worktree = Path(folder) / "baseline"
        git = ["git", "-C", str(ROOT), "worktree"]
        subprocess.run([*git, "add", "--detach", str(worktree), args.baseline], check=True)
        try:
            rows = [compare(args, model, worktree / "src") for model in models]
        finally:
            subprocess.run([*git, "remove", "--force", str(worktree)], check=True)
    header = list(rows[0])
    lines = [",".join(header)] + [",".join(str(row[key]) for key in header) for row in rows]
    print("\n".join(lines))
    if args.csv:
        args.csv.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
