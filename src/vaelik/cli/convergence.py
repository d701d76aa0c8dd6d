"""``vaelik-convergence``: mean log p(x) against K for several estimators and proposals."""

from __future__ import annotations

from vaelik.cli import run_hydra_app
from vaelik.evaluation.convergence import convergence


def main() -> None:
    """Console-script entry point (``vaelik-convergence ckpt_path=PATH``)."""
    run_hydra_app(convergence, "convergence")


if __name__ == "__main__":
    main()
