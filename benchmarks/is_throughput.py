"""Importance-sampling throughput: vaelik's estimator against the common per-example loop.

Both estimate log p(x) with K draws from the encoder's q(z|x) on the same model and the same
test images, in the same run:

- baseline: the loop found in most VAE code. One example at a time; K in chunks of 100; each
  chunk copies x 100 times, re-runs the encoder on the copies, draws z, decodes, and scores
  log p(x|z) with ``binary_cross_entropy_with_logits``.
- vaelik: ``ImportanceSampling`` (encoder once per example, (draw, example) pairs in chunks of
  ``--chunk-size`` through the decoder, Bernoulli log-likelihood as x.l - sum softplus(l),
  float64 log-mean-exp, per-example random streams).

Each measurement runs in a fresh process so that its peak resident memory is its own. Printed:
importance samples per second for both, their ratio, the peak memory of each (and of vaelik at
a smaller K, to show it does not grow with K), and the achieved decoder GFLOP/s beside this
machine's fp32 matmul rate measured in the same run.

    python benchmarks/is_throughput.py --ckpt outputs/train/runs/<run>/checkpoints/last.ckpt \\
        --data-dir ../shared/data --examples 200 --baseline-examples 20
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]


def load_model_and_data(args: argparse.Namespace):
    """The model (from ``--ckpt``, or the binarized-MNIST experiment's architecture with random
    weights) and the first ``n`` binary test images with their indices."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from vaelik.checkpoint import load_weights, read_checkpoint
    from vaelik.config import config_dir
    from vaelik.models.factory import build_model

    if args.ckpt:
        checkpoint = read_checkpoint(args.ckpt)
        cfg = OmegaConf.create(checkpoint.config)
        model = build_model(cfg, "binary")
        load_weights(model, checkpoint)
    else:
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            cfg = compose("train", ["experiment=binarized_mnist", "paths.output_dir=unused"])
        torch.manual_seed(0)
        model = build_model(cfg, "binary")
    amat = Path(args.data_dir) / "BinarizedMNIST" / "binarized_mnist_test.amat"
    if amat.is_file():
        from vaelik.data import BinarizedMNIST

        images = BinarizedMNIST(args.data_dir, download=False).load("test").float()
    else:  # the embedded digits, thresholded
        from vaelik.data import EmbeddedMNIST

        images = (EmbeddedMNIST().load("test").float() >= 128).float()
    return model.eval(), images


def decoder_flops_per_sample(model) -> int:
    """2 * (multiply-adds) of the decoder's linear layers for one latent sample."""
    return sum(
        2 * m.in_features * m.out_features
        for m in model.decoder.modules()
        if isinstance(m, torch.nn.Linear)
    )


@torch.no_grad()
def baseline_log_px(model, x: torch.Tensor, num_samples: int, chunk: int = 100) -> torch.Tensor:
    """The per-example loop: copies of x, encoder re-run per chunk, BCE log-likelihood."""
    results = []
    for example in x:
        log_w = []
        for _ in range(num_samples // chunk):
            copies = example.expand(chunk, *example.shape)
            q = model.posterior(copies).distribution()
            z = q.sample()
            logits = model.decoder(z)
            log_px_z = -F.binary_cross_entropy_with_logits(logits, copies, reduction="none").sum(
                (1, 2, 3)
            )
            log_w.append(log_px_z + model.prior.log_prob(z) - q.log_prob(z))
        log_w = torch.cat(log_w).double()
        results.append(torch.logsumexp(log_w, 0) - math.log(log_w.numel()))
    return torch.stack(results)


def vaelik_log_px(
    model, x: torch.Tensor, num_samples: int, chunk_size: int, batch: int
) -> torch.Tensor:
    from vaelik.inference.estimators import ImportanceSampling
    from vaelik.inference.proposals import EncoderProposal

    estimator = ImportanceSampling(num_samples=num_samples, chunk_size=chunk_size)
    index = torch.arange(len(x))
    parts = [
        estimator(model, x[i : i + batch], index[i : i + batch], EncoderProposal()).log_px
        for i in range(0, len(x), batch)
    ]
    return torch.cat(parts)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(args: argparse.Namespace) -> dict:
    """One measurement (run in its own process): ``--method`` on ``--examples`` images."""
    torch.set_num_threads(args.threads)
    model, images = load_model_and_data(args)
    x = images[: args.examples]
    rss_before = peak_rss_mib()
    if args.method == "baseline":
        baseline_log_px(model, x[:1], 200)  # warm up
        start = time.perf_counter()
        log_px = baseline_log_px(model, x, args.k)
    else:
        vaelik_log_px(model, x[:1], 200, args.chunk_size, args.batch)
        start = time.perf_counter()
        log_px = vaelik_log_px(model, x, args.k, args.chunk_size, args.batch)
    seconds = time.perf_counter() - start
    samples = len(x) * args.k
    return {
        "method": args.method,
        "k": args.k,
        "examples": len(x),
        "seconds": seconds,
        "samples_per_second": samples / seconds,
        "decoder_gflops": decoder_flops_per_sample(model) * samples / seconds / 1e9,
        "peak_rss_mib": peak_rss_mib(),
        "rss_before_mib": rss_before,
        "log_px_mean": log_px.mean().item(),
    }


def matmul_gflops(threads: int, size: int = 2048, repeats: int = 10) -> float:
    """This machine's fp32 matmul rate, square ``size`` matrices."""
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def run_child(args: argparse.Namespace, method: str, k: int, examples: int) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        "--method",
        method,
        "--k",
        str(k),
        "--examples",
        str(examples),
        "--chunk-size",
        str(args.chunk_size),
        "--batch",
        str(args.batch),
        "--threads",
        str(args.threads),
        "--data-dir",
        args.data_dir,
    ] + (["--ckpt", args.ckpt] if args.ckpt else [])
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--ckpt", default=None, help="checkpoint of a Bernoulli MLP VAE (default: random weights)"
    )
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--examples", type=int, default=200, help="test images for vaelik")
    parser.add_argument(
        "--baseline-examples", type=int, default=20, help="test images for the baseline"
    )
    parser.add_argument("--k", type=int, default=5000)
    parser.add_argument("--small-k", type=int, default=500, help="second K for the memory check")
    parser.add_argument("--chunk-size", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method", default="vaelik", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args)))
        return

    peak = matmul_gflops(args.threads)
    base = run_child(args, "baseline", args.k, args.baseline_examples)
    ours = run_child(args, "vaelik", args.k, args.examples)
    small = run_child(args, "vaelik", args.small_k, args.examples)
    print(f"machine: {args.threads} threads, fp32 matmul 2048^2: {peak:.0f} GFLOP/s")
    header = ("method", "K", "examples", "samples/s", "dec GFLOP/s", "% peak", "peak RSS MiB")
    print(f"{header[0]:<10}" + "".join(f"{h:>13}" for h in header[1:]) + f"{'mean log p(x)':>15}")
    for row in (base, ours, small):
        print(
            f"{row['method']:<10}{row['k']:>13}{row['examples']:>13}"
            f"{row['samples_per_second']:>13.0f}{row['decoder_gflops']:>13.1f}"
            f"{100 * row['decoder_gflops'] / peak:>12.0f}%{row['peak_rss_mib']:>13.0f}"
            f"{row['log_px_mean']:>15.3f}"
        )
    ratio = ours["samples_per_second"] / base["samples_per_second"]
    print(f"speed-up vaelik / baseline at K={args.k}: {ratio:.1f}x (target >= 10x)")
    print(
        f"peak memory vaelik K={args.k}: {ours['peak_rss_mib']:.0f} MiB, K={args.small_k}: "
        f"{small['peak_rss_mib']:.0f} MiB "
        f"(ratio {ours['peak_rss_mib'] / small['peak_rss_mib']:.2f})"
    )


if __name__ == "__main__":
    main()
