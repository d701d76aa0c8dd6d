"""``vaelik-convergence``: mean log p(x) against K for several estimators and proposals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from vaelik.cli import run_hydra_app
from vaelik.cli.loading import restore
from vaelik.evaluation.convergence import convergence as convergence_table
from vaelik.evaluation.formatting import figure, grid_error_text, khat_text, report_written
from vaelik.inference.plan import pick_device
from vaelik.subsets import example_indices


def convergence(cfg: DictConfig) -> list[dict[str, Any]]:
    """Estimate log p(x) for every K in ``cfg.ks`` x estimator x proposal (names of files in
    ``conf/estimator/`` and ``conf/proposal/``) with :func:`vaelik.convergence`; write the
    table and the plot."""
    restored = restore(cfg)
    model, datamodule = restored.model, restored.datamodule
    device = pick_device(cfg.device)
    model.to(device)
    dataset = datamodule.dataset(cfg.split)
    indices = example_indices(dataset, cfg.num_examples)
    table = convergence_table(
        model,
        dataset,
        ks=list(cfg.ks),
        estimators=list(cfg.estimators),
        proposals=list(cfg.proposals),
        batch_size=cfg.batch_size,
        examples=indices,
        device=device,
        seed=cfg.seed,
        progress=True,
    )
    output_dir = Path(cfg.paths.output_dir)
    table.write(output_dir)
    table.plot(output_dir / "convergence.png", f"{cfg.split} split, {len(indices)} examples")
    for row in table.rows:
        print(
            f"{row['estimator']:>10} {row['proposal']:>10} K={row['num_samples']:>6} "
            f"log p(x) = {figure(row['log_px_mean'], 3)} +- {figure(row['log_px_stderr'], 3)}  "
            + (
                grid_error_text(row)
                or f"ESS/K = {row['ess_mean']:.3g}  k-hat = {khat_text(row['khat_mean'])}"
            )
        )
    report_written(output_dir)
    return table.rows


def main() -> None:
    """Console-script entry point (``vaelik-convergence ckpt_path=PATH``)."""
    run_hydra_app(convergence, "convergence")


if __name__ == "__main__":
    main()
