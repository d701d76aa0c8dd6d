"""``vaelik-bdmc``: how far AIS can be from log p(x), measured on data simulated from the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from vaelik.cli import run_hydra_app, user_named
from vaelik.cli.loading import restore
from vaelik.config import build
from vaelik.evaluation.bdmc import bdmc as bdmc_bounds
from vaelik.evaluation.formatting import figure, report_written
from vaelik.inference.log_weights import check_positive
from vaelik.inference.plan import pick_device


def bdmc(cfg: DictConfig) -> list[dict[str, Any]]:
    """Simulate ``cfg.num_examples`` pairs from the checkpoint's model, then for each schedule
    length in ``cfg.num_steps`` bound log p(x) from both sides with :func:`vaelik.bdmc`;
    write and print the gaps."""
    count = check_positive("num_examples", cfg.num_examples)
    schedules = [check_positive("num_steps", steps) for steps in cfg.num_steps]
    ais, proposal = build(cfg.ais, "ais"), build(cfg.proposal, "proposal")
    model = restore(cfg).model
    device = pick_device(cfg.device)
    model.to(device)
    result = bdmc_bounds(
        model,
        num_examples=count,
        num_steps=schedules,
        estimator=ais,
        proposal=proposal if user_named("proposal") else None,
        accept_rules=user_named("ais.prior_share", "auto"),
        batch_size=cfg.batch_size,
        device=device,
        seed=cfg.seed,
        progress=True,
    )
    output_dir = Path(cfg.paths.output_dir)
    result.write(output_dir)
    for row in result.rows:
        print(
            f"AIS {row['num_steps']:>5} steps from the {row['start']}: log p(x) between "
            f"{figure(row['lower_mean'])} and {figure(row['upper_mean'])} nats on {count} "
            "simulated examples; gap "
            f"{figure(row['gap_mean'])} +- {figure(row['gap_stderr'])} (largest "
            f"{figure(row['gap_max'])}), {row['seconds']:.1f} s"
        )
    report_written(output_dir)
    return result.rows


def main() -> None:
    """Console-script entry point (``vaelik-bdmc ckpt_path=PATH num_steps=[100,1000]``)."""
    run_hydra_app(bdmc, "bdmc")


if __name__ == "__main__":
    main()
