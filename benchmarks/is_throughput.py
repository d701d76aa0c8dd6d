"""Importance-sampling throughput: vaelik's estimator against pythae's ``get_nll`` and the common
per-example loop, on the same networks and weights, in one run.

Every method estimates log p(x) with K draws from the encoder's q(z|x) on the same test images:

- loop: the loop found in most VAE code. One example at a time; K in chunks of 100; each chunk
  copies x 100 times, re-runs the encoder on the copies, draws z, decodes, and scores log p(x|z)
  with ``binary_cross_entropy_with_logits``.
- pythae: pythae 0.1.2's ``VAE.get_nll`` (``pip install -e ".[bench]"``; skipped when absent),
  its encoder and decoder the same networks with the same weights, at its default
  ``batch_size=100`` and at ``batch_size=K`` (one pass per example, its fastest setting here),
  called under ``torch.no_grad()`` (``get_nll`` itself leaves autograd on).
  Both baselines run torch's own ``nn.Tanh``, as their users' networks do.
- vaelik: ``ImportanceSampling`` (encoder once per example, (draw, example) pairs in chunks of
  ``--chunk-size`` through the decoder, Bernoulli log-likelihood by vaelik's vectorised form,
  tanh layers folded into sigmoid layers without autograd,
  float64 log-mean-exp, per-example random streams), as ``vaelik-eval`` runs it; then
  with the decoder through ``torch.compile`` (its compile time reported), and with the decoder
  in bfloat16 (autocast; log-likelihood sums in float32), whose error against float32 on the
  same draws is set beside the Monte Carlo standard error of each estimate.

Each method runs in a fresh process: one warm-up run, then ``--repeats`` timed runs (the best
kept); the memory it adds (peak resident memory over those runs, sampled every millisecond,
minus the memory before) is its own. vaelik runs at three K: only its [K, B] float64
log-weights (kept for the diagnostics) grow with K. The decoder's fp32 matmul rate is set
beside this machine's fp32 matmul peak: the best of several matmuls (square ones and the
decoder's own layer shapes) measured before and after the methods, each the best of three;
and, since this shared machine's speed drifts by 15% between minutes, vaelik's rate is also
set beside the peak measured right after each of ``--repeats`` further runs (a square matmul
of 2048 and the decoder's layers, best of three, about 3 s), in the same process.

    python benchmarks/is_throughput.py --data-dir /path/to/data --threads 1
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time

import torch
import torch.nn.functional as F


def load_model_and_data(args: argparse.Namespace):
    """The model (from ``--ckpt``, or the binarized-MNIST experiment's architecture with random
    weights) and the binary test images."""
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
    if args.data_dir:
        from vaelik.data import BinarizedMNIST

        images = BinarizedMNIST(args.data_dir, download=False).load("test").float()
    else:  # the embedded digits, thresholded
        from vaelik.data import EmbeddedMNIST

        images = (EmbeddedMNIST().load("test").float() >= 128).float()
    return model.eval(), images


def with_torch_tanh(model):
    """A copy of ``model`` whose tanh MLPs are plain ``nn.Sequential`` with torch's ``nn.Tanh``
    (the baselines' networks: no folding, torch's kernel)."""
    from vaelik.models.elementwise import Tanh
    from vaelik.models.folding import TanhMLP

    plain = copy.deepcopy(model)
    for module in list(plain.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, TanhMLP):
                layers = [torch.nn.Tanh() if isinstance(m, Tanh) else m for m in child]
                setattr(module, name, torch.nn.Sequential(*layers))
            elif isinstance(child, Tanh):
                setattr(module, name, torch.nn.Tanh())
    return plain


def decoder_layers(model) -> list[torch.nn.Linear]:
    return [m for m in model.decoder.modules() if isinstance(m, torch.nn.Linear)]


def decoder_flops_per_sample(model) -> int:
    """2 * (multiply-adds) of the decoder's linear layers for one latent sample."""
    return sum(2 * m.in_features * m.out_features for m in decoder_layers(model))


def decoder_gflops(model, samples: int, seconds: float) -> float:
    """The decoder's linear layers' rate (GFLOP/s) over ``samples`` latent samples."""
    return decoder_flops_per_sample(model) * samples / seconds / 1e9


@torch.no_grad()
def loop_log_px(model, x: torch.Tensor, num_samples: int, chunk: int = 100) -> torch.Tensor:
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


def pythae_model(model):
    """pythae's ``VAE`` whose encoder and decoder are ``model``'s (same modules, same weights):
    its encoder returns q's mean and log-variance, its decoder the Bernoulli means."""
    from pythae.models import VAE, VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    class Encoder(BaseEncoder):
        def forward(self, x):
            posterior = model.posterior(x)
            return ModelOutput(embedding=posterior.loc, log_covariance=2 * posterior.scale.log())

    class Decoder(BaseDecoder):
        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(model.decoder(z)))

    config = VAEConfig(
        input_dim=(1, 28, 28), latent_dim=model.latent_dim, reconstruction_loss="bce"
    )
    return VAE(config, encoder=Encoder(), decoder=Decoder()).eval()


def vaelik_estimate(model, x: torch.Tensor, num_samples: int, chunk_size: int | None, batch: int):
    """vaelik's IS estimate of ``x`` in batches, as ``vaelik-eval`` runs it: log p(x) ``[N]``
    and each estimate's Monte Carlo standard error (delta method: sqrt((1/ESS - 1) / K))."""
    from vaelik.inference.estimators import ImportanceSampling
    from vaelik.inference.plan import resolve

    plan = resolve(model, ImportanceSampling(num_samples=num_samples, chunk_size=chunk_size))
    index = torch.arange(len(x))
    parts = [plan.estimate(x[i : i + batch], index[i : i + batch]) for i in range(0, len(x), batch)]
    log_px = torch.cat([p.log_px for p in parts])
    ess = torch.cat([p.ess for p in parts])
    return log_px, ((1 / ess - 1) / num_samples).sqrt()


class InBfloat16(torch.nn.Module):
    """``network`` run under CPU autocast to bfloat16 (matmuls in bfloat16)."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.network(z)


class RssWatch:
    """The largest resident memory (MiB) this process reaches while the ``with`` block runs,
    sampled every millisecond from /proc/self/statm; ``added`` is that peak minus the memory
    before the block."""

    def __init__(self) -> None:
        self.page_mib = os.sysconf("SC_PAGE_SIZE") / 2**20
        self.peak = self.before = 0.0
        self._stop = threading.Event()

    def rss_mib(self) -> float:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * self.page_mib

    def _watch(self) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, self.rss_mib())

    def __enter__(self) -> RssWatch:
        self.before = self.peak = self.rss_mib()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss_mib())

    @property
    def added(self) -> float:
        return self.peak - self.before


def measure(args: argparse.Namespace) -> dict:
    """One measurement (run in its own process): ``--method`` on ``--examples`` images."""
    torch.set_num_threads(args.threads)
    model, images = load_model_and_data(args)
    x = images[: args.examples]
    extra: dict = {}
    if args.method == "loop":
        plain = with_torch_tanh(model)

        def run():
            return loop_log_px(plain, x, args.k)
    elif args.method.startswith("pythae"):
        pythae = pythae_model(with_torch_tanh(model))
        batch = 100 if args.method == "pythae" else args.k
        torch.manual_seed(0)

        def run():
            with torch.no_grad():  # get_nll itself leaves autograd on
                return torch.tensor([pythae.get_nll(x, n_samples=args.k, batch_size=batch)])
    else:
        if args.method == "vaelik-compile":
            model.decoder = torch.compile(model.decoder, dynamic=False)
        if args.method == "vaelik-bf16":
            reference, stderr = vaelik_estimate(model, x, args.k, args.chunk_size, args.batch)
            model.decoder = InBfloat16(model.decoder)

        def run():
            log_px, extra["stderr"] = vaelik_estimate(model, x, args.k, args.chunk_size, args.batch)
            return log_px

    seconds = math.inf
    with RssWatch() as memory:
        start = time.perf_counter()
        run()  # warm-up (and compilation)
        first_run = time.perf_counter() - start
        for _ in range(args.repeats):
            start = time.perf_counter()
            log_px = run()
            seconds = min(seconds, time.perf_counter() - start)
    if args.paired:  # each run's decoder GFLOP/s over the matmul peak measured right after it
        extra["paired_peak_shares"] = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            run()
            rate = decoder_gflops(model, len(x) * args.k, time.perf_counter() - start)
            extra["paired_peak_shares"].append(rate / adjacent_peak(args, model))
    if args.method == "vaelik-compile":  # the first run compiles for each shape it meets
        extra["compile_seconds"] = first_run - seconds
    if args.method == "vaelik-bf16":
        error = log_px - reference
        extra.update(
            bf16_mean_error=error.mean().item(),
            bf16_max_error=error.abs().max().item(),
            mc_stderr=stderr.mean().item(),
            share_error_above_stderr=(error.abs() > stderr).double().mean().item(),
        )
    stderr_of_run = extra.pop("stderr", None)
    if args.method == "vaelik":  # each example's estimate is its own, whatever else is batched
        common = stderr_of_run[: args.common]
        extra["common_stderr"] = (common.square().sum().sqrt() / args.common).item()
    if args.method == "vaelik" and args.float64_examples:
        # the float32 fast path against float64 on the same draws
        n = args.float64_examples
        exact, stderr = vaelik_estimate(model.double(), x[:n].double(), args.k, None, args.batch)
        extra.update(
            float32_max_error=(log_px[:n] - exact).abs().max().item(),
            mc_stderr=stderr.mean().item(),
        )
    samples = len(x) * args.k
    return {
        "method": args.method,
        "k": args.k,
        "examples": len(x),
        "seconds": seconds,
        "samples_per_second": samples / seconds,
        "decoder_gflops": decoder_gflops(model, samples, seconds),
        "added_mib": memory.added,
        "log_px_mean": log_px.double().mean().item(),
        # the mean over the images every method ran on (pythae reports only a mean)
        "log_px_common": log_px[: args.common].double().mean().item(),
        **extra,
    }


def matmul_peak(
    threads: int, layers: list[tuple[int, int]], rows: int, squares=(1024, 2048, 4096), flops=1e10
) -> float:
    """This machine's fp32 matmul rate (GFLOP/s): the best over square matmuls of ``squares``
    and the decoder's own layers (``rows`` x in @ in x out, with bias), each timed 3 times over
    about ``flops`` floating-point operations."""
    torch.set_num_threads(threads)
    shapes = [(n, n, n) for n in squares] + [(rows, i, o) for i, o in layers]
    best = 0.0
    for m, k, n in shapes:
        a, b, bias = torch.randn(m, k), torch.randn(n, k), torch.randn(n)
        torch.addmm(bias, a, b.t())
        repeats = max(3, int(flops / (2 * m * k * n)))
        for _ in range(3):
            start = time.perf_counter()
            for _ in range(repeats):
                torch.addmm(bias, a, b.t())
            best = max(best, 2 * m * k * n * repeats / (time.perf_counter() - start) / 1e9)
    return best


def adjacent_peak(args: argparse.Namespace, model) -> float:
    """The matmul peak measured right after a timed run (about 3 s): the machine's speed at that
    moment, for a ratio that this shared machine's drift between minutes does not move."""
    from vaelik.inference.log_weights import default_chunk_size

    layers = [(m.in_features, m.out_features) for m in decoder_layers(model)]
    rows = args.chunk_size or default_chunk_size(torch.device("cpu"))
    return matmul_peak(args.threads, layers, rows, squares=(2048,), flops=2e10)


def run_child(
    args: argparse.Namespace, method: str, k: int, examples: int, paired: bool = False
) -> dict | None:
    command = [sys.executable, __file__, "--child", "--method", method, "--k", str(k)]
    command += ["--paired"] if paired else []
    command += ["--examples", str(examples), "--batch", str(args.batch)]
    command += ["--common", str(min(examples, args.baseline_examples))]
    command += ["--threads", str(args.threads)]
    command += ["--data-dir", args.data_dir] if args.data_dir else []
    command += ["--float64-examples", str(args.float64_examples), "--repeats", str(args.repeats)]
    command += ["--chunk-size", str(args.chunk_size)] if args.chunk_size else []
    command += ["--ckpt", args.ckpt] if args.ckpt else []
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        if method.startswith("pythae") and "No module named 'pythae'" in result.stderr:
            return None
        raise SystemExit(f"{method} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--ckpt", default=None, help="checkpoint of a Bernoulli MLP VAE (default: random weights)"
    )
    parser.add_argument(
        "--data-dir", help="a folder holding BinarizedMNIST/ (default: the embedded digits)"
    )
    parser.add_argument("--examples", type=int, default=100, help="test images for vaelik")
    parser.add_argument(
        "--baseline-examples", type=int, default=20, help="test images for the loop and pythae"
    )
    parser.add_argument("--k", type=int, default=5000)
    parser.add_argument("--small-k", type=int, default=500, help="a smaller K, for memory")
    parser.add_argument("--large-k", type=int, default=50_000, help="a larger K, for memory")
    parser.add_argument("--chunk-size", type=int, default=None, help="default: vaelik's")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--float64-examples", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="timings per method (best kept)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--paired", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--common", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--method", default="vaelik", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args)))
        return

    model, _ = load_model_and_data(args)
    layers = [(m.in_features, m.out_features) for m in decoder_layers(model)]
    from vaelik.inference.log_weights import default_chunk_size

    rows = args.chunk_size or default_chunk_size(torch.device("cpu"))
    peak = matmul_peak(args.threads, layers, rows)
    base_n, n, k = args.baseline_examples, args.examples, args.k
    measured = [
        run_child(args, "loop", k, base_n),
        run_child(args, "pythae", k, base_n),
        run_child(args, "pythae-batch-k", k, base_n),
        run_child(args, "vaelik", k, n, paired=True),
        run_child(args, "vaelik-compile", k, n),
        run_child(args, "vaelik-bf16", k, n),
        run_child(args, "vaelik", args.small_k, n),
        run_child(args, "vaelik", args.large_k, max(1, n // 10)),
    ]
    peak = max(peak, matmul_peak(args.threads, layers, rows))
    table = [row for row in measured if row is not None]
    print(f"machine: {args.threads} threads, best fp32 matmul: {peak:.1f} GFLOP/s")
    header = ("K", "examples", "samples/s", "dec GFLOP/s", "% peak", "+memory MiB", "log p(x)")
    print(f"{'method':<16}" + "".join(f"{h:>13}" for h in header))
    for row in table:
        print(
            f"{row['method']:<16}{row['k']:>13}{row['examples']:>13}"
            f"{row['samples_per_second']:>13.0f}{row['decoder_gflops']:>13.1f}"
            f"{100 * row['decoder_gflops'] / peak:>12.0f}%{row['added_mib']:>13.0f}"
            f"{row['log_px_mean']:>13.3f}"
        )
    ours = measured[3]
    baselines = [row for row in measured[:3] if row is not None]
    for row in baselines:
        ratio = ours["samples_per_second"] / row["samples_per_second"]
        print(f"vaelik / {row['method']} at K={k}: {ratio:.2f}x")
    print(
        f"mean log p(x) of the first {base_n} images: "
        + ", ".join(f"{row['method']} {row['log_px_common']:.3f}" for row in [*baselines, ours])
        + f" (vaelik's Monte Carlo standard error of that mean: {ours['common_stderr']:.3f})"
    )
    print(f"vaelik decoder: {100 * ours['decoder_gflops'] / peak:.0f}% of the fp32 matmul peak")
    shares = sorted(ours["paired_peak_shares"])
    print(
        "vaelik decoder against the matmul peak measured right after each timed run: "
        + " / ".join(f"{100 * share:.0f}%" for share in shares)
        + f" (median {100 * statistics.median(shares):.0f}%)"
    )
    print(
        f"float32 vs float64, {args.float64_examples} images: max |error| "
        f"{ours['float32_max_error']:.2e} nats (MC standard error {ours['mc_stderr']:.3f})"
    )
    compiled, bf16 = measured[4], measured[5]
    print(
        f"torch.compile: {compiled['compile_seconds']:.1f} s to compile, "
        f"{compiled['samples_per_second'] / ours['samples_per_second']:.2f}x eager"
    )
    print(
        f"bfloat16 decoder: {bf16['samples_per_second'] / ours['samples_per_second']:.2f}x "
        f"float32; error mean {bf16['bf16_mean_error']:+.3f}, max |error| "
        f"{bf16['bf16_max_error']:.3f} nats; MC standard error {bf16['mc_stderr']:.3f}; "
        f"|error| > standard error on {100 * bf16['share_error_above_stderr']:.0f}% of images"
    )
    print(
        "memory added by vaelik's estimate (peak during it - before): "
        + ", ".join(
            f"K={r['k']}: {r['added_mib']:.0f} MiB" for r in (measured[6], ours, measured[7])
        )
    )


if __name__ == "__main__":
    main()
