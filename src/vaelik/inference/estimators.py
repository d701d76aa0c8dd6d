"""Estimators of the marginal likelihood log p(x), per example.

An estimator is a fixed set of settings (K, chunk size, seed, name; never changed once built:
:meth:`LogWeightEstimator.replace` builds another). It decides no policy: :func:`vaelik.resolve`
(:mod:`vaelik.inference.plan`) resolves it for a model into a :class:`~vaelik.inference.plan.Plan`
(the K it really draws, the proposal it really uses, the automatic choices and why), and the
estimator maps the plan and ``(x [B, ...], index [B])`` to log-weights ``[K, B]`` and an
:class:`Estimate`, so a new guide, prior, proposal or likelihood head needs no change here.
Annealed importance sampling lives in :mod:`vaelik.inference.ais`.
"""

from __future__ import annotations

import functools
import inspect
import math
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from vaelik.errors import SettingError
from vaelik.inference.diagnostics import (
    flag_unreliable,
    log_mean_exp,
    log_weight_variance,
    normalized_ess,
    pareto_khat,
)
from vaelik.inference.log_weights import (
    check_positive,
    default_chunk_size,
    importance_log_weights,
)
from vaelik.inference.proposals import Proposal
from vaelik.options import option_defaults


class ResolvedPlan(Protocol):
    """What an estimator reads of the plan it computes for (:class:`vaelik.inference.plan.Plan`,
    made by :func:`vaelik.resolve`): the model, the proposal the draws really come from, and K,
    the number of log-weights per example (read-only, as a frozen plan holds them)."""

    @property
    def model(self) -> Any: ...

    @property
    def proposal(self) -> Proposal: ...

    @property
    def num_samples(self) -> int: ...


def monte_carlo_stderr(ess: torch.Tensor, num_samples: int) -> torch.Tensor:
    """The standard error of log p_hat(x) = log mean_k w_k, per example ``[B]``, by the delta
    method: sd(w) / (sqrt(K) mean(w)) with the sample sd, which in terms of the normalised ESS
    e = (sum w)^2 / (K sum w^2) is sqrt((1/e - 1) / (K - 1)). NaN for K = 1. Like every
    variance estimate from the weights themselves, it is too small when k-hat is large."""
    if num_samples < 2:
        return torch.full_like(ess, math.nan)
    return torch.sqrt((1 / ess - 1).clamp(min=0) / (num_samples - 1))


@dataclass
class Estimate:
    """Per-example results, each ``[B]`` float64: the log p(x) estimate, its Monte Carlo
    standard error (:func:`monte_carlo_stderr`; NaN for a grid rule), and its diagnostics
    (normalised ESS, variance of log w, PSIS k-hat; see :mod:`vaelik.inference.diagnostics`),
    and, for a deterministic rule (:mod:`vaelik.inference.quadrature`), its error check in nats
    (NaN for sampling estimators); ``flagged`` is 1 where the estimator's own check says the
    estimate should not be trusted (:func:`~vaelik.inference.diagnostics.flag_unreliable`, or
    the grid error above the rule's tolerance), else 0."""

    log_px: torch.Tensor
    mc_stderr: torch.Tensor
    ess: torch.Tensor
    log_weight_var: torch.Tensor
    khat: torch.Tensor
    grid_error: torch.Tensor
    flagged: torch.Tensor

    @classmethod
    def from_log_weights(cls, log_w: torch.Tensor) -> Estimate:
        """Reduce log-weights ``[K, B]``: log p_hat(x) = logsumexp_k log w_k - log K."""
        log_px = log_mean_exp(log_w)
        log_weight_var = log_weight_variance(log_w)
        khat = pareto_khat(log_w)
        ess = normalized_ess(log_w)
        return cls(
            log_px=log_px,
            mc_stderr=monte_carlo_stderr(ess, log_w.shape[0]),
            ess=ess,
            log_weight_var=log_weight_var,
            khat=khat,
            grid_error=torch.full_like(log_px, math.nan),
            flagged=flag_unreliable(khat, log_weight_var),
        )


class LogWeightEstimator:
    """An estimator defined by its log-weights ``[K, B]``: subclasses implement
    :meth:`log_weights`; K, the chunk size, the seed, the reported name and the reduction to an
    :class:`Estimate` are shared.

    Settings are fixed when the estimator is built (setting an attribute afterwards raises):
    :meth:`replace` gives a copy with other settings, validated as at construction."""

    #: the kind of estimate, as plans record it (``importance``, ``ais``, ``quadrature``)
    kind: str
    #: True where the estimator needs log r(z|x) at latents r did not draw (AIS)
    needs_log_prob = False

    def __init__(
        self,
        num_samples: int,
        chunk_size: int | None,
        seed: int,
        name: str,
        proposal: Proposal | None,
    ) -> None:
        self.num_samples = check_positive("num_samples", num_samples)  # K: checked here only
        self.chunk_size = None if chunk_size is None else check_positive("chunk_size", chunk_size)
        self.seed = int(seed)
        self.name = name
        #: a proposal that replaces the run's (naive Monte Carlo's prior), or None
        self.proposal = proposal

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every subclass's constructor records its arguments (for :meth:`replace`) and then
        freezes the instance."""
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return

        @functools.wraps(init)
        def init_then_freeze(self, *args: Any, **settings: Any) -> None:
            init(self, *args, **settings)
            if type(self).__init__ is init_then_freeze:  # the outermost constructor only
                bound = inspect.signature(init).bind(self, *args, **settings)
                bound.apply_defaults()  # a default is a setting as much as a given value
                arguments = bound.arguments
                arguments.pop("self")
                object.__setattr__(self, "_arguments", dict(arguments))
                object.__setattr__(self, "_frozen", True)

        cls.__init__ = init_then_freeze  # type: ignore[method-assign]

    def __setattr__(self, name: str, value: Any) -> None:
        if self.__dict__.get("_frozen"):
            raise AttributeError(
                f"{type(self).__name__}'s settings are fixed once it is built: use "
                f".replace({name}=...) for an estimator with another {name}"
            )
        super().__setattr__(name, value)

    def settings(self) -> dict[str, Any]:
        """The settings this estimator was built with: every argument of its constructor, the
        defaulted ones included."""
        return dict(self.__dict__["_arguments"])

    def __repr__(self) -> str:
        """The constructor call that builds this estimator: ``ImportanceSampling(num_samples=
        5000, chunk_size=None, seed=0, name='importance', proposal=None)``."""
        arguments = ", ".join(f"{key}={value!r}" for key, value in self.settings().items())
        return f"{type(self).__name__}({arguments})"

    def __eq__(self, other: object) -> bool:
        """Equal estimators are of one class with equal settings (they compute the same
        log-weights for the same plan)."""
        if type(other) is not type(self):
            return NotImplemented
        return self.settings() == other.settings()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(type(self))

    def takes(self, setting: str) -> bool:
        """Whether ``setting`` is one of this estimator's settings (quadrature has no
        ``num_samples``: its K is points^L)."""
        return setting in inspect.signature(type(self)).parameters

    def replace(self, **changes: Any) -> LogWeightEstimator:
        """A new estimator of the same class with ``changes`` to the settings it was built with
        (checked as any constructor's arguments are; a setting it does not have is an error)."""
        known = inspect.signature(type(self)).parameters
        for setting in changes:
            if setting not in known:
                raise SettingError(
                    setting,
                    f"is not a setting of estimator {self.name!r}: its settings are "
                    f"{', '.join(sorted(known))}",
                )
        return type(self)(**{**self.settings(), **changes})

    def pairs_per_pass(self, device: torch.device) -> int:
        """``chunk_size``, or where it is None the size that suits ``device``
        (:func:`~vaelik.inference.log_weights.default_chunk_size`)."""
        return default_chunk_size(device) if self.chunk_size is None else self.chunk_size

    def log_weights(self, plan: ResolvedPlan, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Log-weights ``[K, B]`` (float64) of the examples ``x [B, ...]`` with dataset indices
        ``index [B]`` (the keys of their random streams)."""
        raise NotImplementedError

    def notice(self, estimate: Estimate) -> None:
        """Warn about what a batch's estimate shows (nothing, unless a subclass says): called
        once per batch on its examples alone, not on a block's filling."""

    def estimate(self, plan: ResolvedPlan, x: torch.Tensor, index: torch.Tensor) -> Estimate:
        """Per-example estimates of ``x`` from their log-weights."""
        return Estimate.from_log_weights(self.log_weights(plan, x, index))


_IMPORTANCE = option_defaults("estimator", "importance")


class ImportanceSampling(LogWeightEstimator):
    """log p(x) ~ log (1/K) sum_k p(x|z_k) p(z_k) / r(z_k|x), z_k ~ r(z|x).

    The estimate of p(x) is unbiased; its log is a lower bound in expectation (the IWAE bound,
    Burda et al. 2016) that tightens as K grows. With K = 1 and the encoder as proposal it is the
    single-sample ELBO. With ``proposal`` set (e.g. the prior) it ignores the run's
    proposal: that is the naive Monte Carlo estimator ``estimator=prior``. Defaults: those of
    ``conf/estimator/importance.yaml``.

    Args:
        num_samples: K >= 1 draws per example.
        chunk_size: (draw, example) pairs per decoder pass; bounds memory, not the result. None:
            a size that suits the device (:func:`~vaelik.inference.log_weights.default_chunk_size`).
        seed: mixed with each example's index into its random stream.
        name: reported in summaries.
        proposal: a fixed proposal that replaces the run's, or None.
    """

    kind = "importance"
    # the first K draws of a run with more draws are exactly the draws of a run with K
    nested_in_k = True

    def __init__(
        self,
        num_samples: int = _IMPORTANCE["num_samples"],
        chunk_size: int | None = _IMPORTANCE["chunk_size"],
        seed: int = 0,
        name: str = _IMPORTANCE["name"],
        proposal: Proposal | None = None,
    ) -> None:
        super().__init__(num_samples, chunk_size, seed, name, proposal)

    def log_weights(self, plan: ResolvedPlan, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Log-weights ``[K, B]`` in float64."""
        return importance_log_weights(
            plan.model,
            x,
            index,
            plan.proposal,
            plan.num_samples,
            self.pairs_per_pass(x.device),
            self.seed,
        )
