"""vaelik: train variational autoencoders and measure log p(x) honestly.

The Python API measures any model that meets :class:`MeasurableModel` (vaelik's own, or one
wrapped by :mod:`vaelik.adapters`)::

    import vaelik

    estimates = vaelik.estimate(model, x_test, estimator="importance", num_samples=5000)
    estimates.summary["log_px_mean"], estimates.summary["bpd"]
    estimates.write("results/")  # per_example.csv and summary.json

``vaelik.resolve(model, estimator, proposal, **settings)`` decides every setting once and
returns a frozen :class:`Plan` (``plan.describe()``, ``plan.digest``, ``plan.to_dict()``),
which ``vaelik.estimate(model, data, plan=plan)`` runs. Estimators and proposals are named as
in the configs (``importance``, ``ais``, ``prior``, ``quadrature``; ``encoder``, ``prior``,
``student_t``, ``inflated``, ``defensive``, ``refined``), with the configs' defaults;
:func:`make_estimator` and :func:`make_proposal` build them with other settings.
"""

__version__ = "0.2.0"

from vaelik.evaluation.bdmc import BdmcResult, bdmc
from vaelik.evaluation.convergence import ConvergenceTable, convergence
from vaelik.evaluation.estimate import Estimates, estimate
from vaelik.inference.choices import make_estimator, make_proposal
from vaelik.inference.plan import Plan, resolve
from vaelik.models.contract import MeasurableModel, ModelContractError

__all__ = [
    "BdmcResult",
    "ConvergenceTable",
    "Estimates",
    "MeasurableModel",
    "ModelContractError",
    "Plan",
    "bdmc",
    "convergence",
    "estimate",
    "make_estimator",
    "make_proposal",
    "resolve",
]
