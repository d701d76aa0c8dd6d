"""``vaelik-eval``: estimate log p(x) on a data split from a checkpoint alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from vaelik.cli import run_hydra_app, user_named
from vaelik.cli.loading import restore
from vaelik.config import build
from vaelik.evaluation.distributed import process_group, world
from vaelik.evaluation.estimate import estimate
from vaelik.evaluation.formatting import estimate_text, report_written
from vaelik.evaluation.store import shard_path
from vaelik.inference.ais import AUTO
from vaelik.inference.plan import pick_device, resolve
from vaelik.subsets import example_indices, parse_shard, shard_of


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Rebuild the model of ``cfg.ckpt_path``, estimate log p(x) on ``cfg.split`` with
    :func:`vaelik.estimate`, write ``per_example.csv`` and ``summary.json``."""
    estimator, proposal = build(cfg.estimator, "estimator"), build(cfg.proposal, "proposal")
    restored = restore(cfg)
    model, datamodule = restored.model, restored.datamodule
    device = pick_device(cfg.device)
    model.to(device)
    # every choice made, and an impossible combination refused, before any work; a proposal
    # the command line names is never replaced by an automatic rule
    asked = proposal if user_named("proposal") else None
    rules = {"prior_share": AUTO} if user_named("estimator.prior_share", AUTO) else {}
    plan = resolve(model, estimator, asked, device=device, batch_size=cfg.batch_size, **rules)
    print(f"plan: {plan.describe()}")
    dataset = datamodule.dataset(cfg.split)
    shard = parse_shard(cfg.get("shard"))
    indices = shard_of(example_indices(dataset, cfg.num_examples), shard)
    store = cfg.get("store")
    if store is not None and shard is not None:
        store = shard_path(store, shard)  # a file of its own: no lock shared with other shards
    with process_group(device, cfg.get("dist_timeout_s", 300.0)):
        rank, _ = world()
        estimates = estimate(
            model,
            dataset,
            plan=plan,
            examples=indices,
            progress=True,
            store=store,
            split=cfg.split,
        )
    summary = {
        **estimates.summary,
        "split": cfg.split,
        "checkpoint": str(Path(cfg.ckpt_path).resolve()),
        **({"shard": f"{shard[0]}/{shard[1]}"} if shard else {}),
    }
    if rank == 0:
        output_dir = Path(cfg.paths.output_dir)
        estimates.summary = summary
        estimates.write(output_dir)
        print(f"{cfg.split}: {estimate_text(summary)}, {summary['seconds']:.1f} s")
        if summary.get("store"):
            print(
                f"store {summary['store']}: {summary['reused']} of {summary['num_examples']} "
                "examples reused, the rest computed and kept"
            )
        report_written(output_dir)
    return summary


def main() -> None:
    """Console-script entry point (``vaelik-eval ckpt_path=PATH``)."""
    run_hydra_app(evaluate, "eval")


if __name__ == "__main__":
    main()
