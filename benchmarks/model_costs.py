"""What each latent model costs, against the plain VAE measured in the same run.

For every model (a list of config overrides on the binarized-MNIST experiment's MLP: 784-500-500
networks, 50 latents per layer), on random binary images of MNIST's size:

- training: seconds per step of Adam on a batch of 100 with the model's objective (median of
  ``--steps`` after two warm-up steps), and the ratio to the plain VAE;
- evaluation: importance samples per second of ``ImportanceSampling`` (K = ``--k``) over
  ``--examples`` images, and the ratio to the plain VAE.

    python benchmarks/model_costs.py --steps 20 --k 1000 --examples 20
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

MODELS = {
    "vae (baseline)": [],
    "iwae k=5": ["objective=iwae", "objective.num_samples=5"],
    "mixture prior": ["prior=mixture"],
    "vampprior 500": ["prior=vampprior"],
    "iaf 2 steps": ["posterior=iaf"],
    "hvae": ["model=hvae"],
    "hvae + vampprior": ["model=hvae", "prior=vampprior"],
}


def build(overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate

    from vaelik.config import config_dir
    from vaelik.models.factory import build_model

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(
            "train", ["experiment=binarized_mnist", "paths.output_dir=unused", *overrides]
        )
    torch.manual_seed(0)
    return build_model(cfg, "binary"), instantiate(cfg.objective)


def measure(overrides: list[str], steps: int, k: int, examples: int) -> dict[str, float]:
    from vaelik.inference.estimators import ImportanceSampling
    from vaelik.inference.plan import resolve

    model, objective = build(overrides)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)
    generator = torch.Generator().manual_seed(0)
    x = (torch.rand(100, 1, 28, 28, generator=generator) < 0.15).float()
    times = []
    for step in range(steps + 2):
        start = time.perf_counter()
        optimizer.zero_grad()
        objective(model, x).loss.backward()
        optimizer.step()
        if step >= 2:
            times.append(time.perf_counter() - start)
    model.eval()
    plan = resolve(model, ImportanceSampling(num_samples=k))
    start = time.perf_counter()
    estimate = plan.estimate(x[:examples], torch.arange(examples))
    seconds = time.perf_counter() - start
    return {
        "step_seconds": statistics.median(times),
        "samples_per_second": examples * k / seconds,
        "log_px_mean": estimate.log_px.mean().item(),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--examples", type=int, default=20)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    header = ("model", "parameters", "s/step", "x VAE", "IS samples/s", "x VAE")
    print(f"{header[0]:<18}" + "".join(f"{h:>14}" for h in header[1:]))
    measure([], 3, 10, 2)  # warm the thread pool and the allocator before the baseline
    baseline = None
    for name, overrides in MODELS.items():
        row = measure(overrides, args.steps, args.k, args.examples)
        baseline = baseline or row
        print(
            f"{name:<18}{row['parameters']:>14,}{row['step_seconds']:>14.4f}"
            f"{row['step_seconds'] / baseline['step_seconds']:>14.2f}"
            f"{row['samples_per_second']:>14.0f}"
            f"{row['samples_per_second'] / baseline['samples_per_second']:>14.2f}"
        )


if __name__ == "__main__":
    main()
