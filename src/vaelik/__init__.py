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
in the configs (estimators ``ais``, ``importance``, ``prior``, ``quadrature``; proposals
``defensive``, ``encoder``, ``inflated``, ``prior``, ``refined``, ``student_t``: the lists
:func:`estimator_names` and :func:`proposal_names` read from the config tree), with the configs'
defaults; :func:`make_estimator` and :func:`make_proposal` build them with other settings.
``examples=`` takes indices (``range(100)``: the first 100) or :class:`Spread` (``Spread(100)``:
100 spread evenly over the data).
"""

__version__ = "0.2.0"

from vaelik.evaluation.bdmc import BdmcResult, bdmc
from vaelik.evaluation.convergence import ConvergenceTable, convergence
from vaelik.evaluation.estimate import Estimates, EstimatorChoice, ProposalChoice, estimate
from vaelik.evaluation.indexed_data import EstimationData, ExampleChoice
from vaelik.evaluation.results import PerExampleResults
from vaelik.evaluation.store import Measurement, ResultStore
from vaelik.inference.ais import AnnealedImportanceSampling
from vaelik.inference.choices import estimator_names, make_estimator, make_proposal, proposal_names
from vaelik.inference.estimators import Estimate, LogWeightEstimator, ResolvedPlan
from vaelik.inference.plan import Choice, Execution, Plan, resolve
from vaelik.inference.proposals import Proposal
from vaelik.inference.streams import Draws
from vaelik.models.contract import BatchPosterior, LatentPrior, MeasurableModel, ModelContractError
from vaelik.models.guides import Posterior
from vaelik.subsets import Spread

__all__ = [
    "AnnealedImportanceSampling",
    "BatchPosterior",
    "BdmcResult",
    "Choice",
    "ConvergenceTable",
    "Draws",
    "Estimate",
    "Estimates",
    "EstimationData",
    "EstimatorChoice",
    "ExampleChoice",
    "Execution",
    "LatentPrior",
    "LogWeightEstimator",
    "MeasurableModel",
    "Measurement",
    "ModelContractError",
    "PerExampleResults",
    "Plan",
    "Posterior",
    "Proposal",
    "ProposalChoice",
    "ResolvedPlan",
    "ResultStore",
    "Spread",
    "bdmc",
    "convergence",
    "estimate",
    "estimator_names",
    "make_estimator",
    "make_proposal",
    "proposal_names",
    "resolve",
]
