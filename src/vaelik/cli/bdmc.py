"""``vaelik-bdmc``: how far AIS can be from log p(x), measured on data simulated from the model."""

from __future__ import annotations

from vaelik.cli import run_hydra_app
from vaelik.evaluation.bdmc import bdmc


def main() -> None:
    """Console-script entry point (``vaelik-bdmc ckpt_path=PATH num_steps=[100,1000]``)."""
    run_hydra_app(bdmc, "bdmc")


if __name__ == "__main__":
    main()
