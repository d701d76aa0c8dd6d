"""``vaelik.resolve``: every setting of an estimate decided once, named, digested and reported.

A number is only as good as the ability to say what produced it. :func:`resolve` takes what the
user asked for (an estimator and a proposal, by name or built, and settings) and a model, makes
every automatic choice there and nowhere else, and returns a frozen :class:`Plan`:

- what determines the values (:meth:`Plan.values`): the estimator's kind and its settings, K
  (the one number of log-weights per example: draws, chains, or grid cells points^L), the
  proposal the draws really come from (AIS's start included) with its settings, the seed, the
  model's dtype, and the shapes every network call is made with: the block of examples computed
  together (:mod:`vaelik.inference.blocks`) and ``chunk_size``. Their canonical JSON's sha256 is
  :attr:`Plan.digest`: equal across processes, machines and vaelik versions for the same
  values, different when any of them changes;
- what does not (:class:`Execution`): the device and the batch size. No value depends on them:
  the per-example streams and the fixed blocks make each example's value a pure function of
  the weights, the plan, the seed and its index, bit for bit on one machine and software stack
  (docs/reference/reproducibility.md);
- the automatic choices (:class:`Choice`), each with its reason, printed by
  :meth:`Plan.describe`, stored by :meth:`Plan.to_dict` (``summary.json``'s ``plan``).

The rules, all here:

- ``estimator=prior`` draws from the prior and ``quadrature`` from its grid's box: a proposal
  asked for with them would not be used, and is refused;
- AIS starts its chains from the prior for latents of at most :data:`PRIOR_START_MAX_DIM`
  dimensions or guides that cannot score latents, from the proposal otherwise
  (``prior_share=auto``), or as ``prior_share`` says;
- where a rule would discard a proposal the caller gave, the plan is refused with the fix,
  unless the caller accepts the rules (``accept_rules=True``: a comparison across proposals,
  a command whose proposal came from its config's defaults) or asks for AIS's rule by name
  (``prior_share="auto"``). Either way the choice is reported;
- a refined proposal asked for with a model whose posterior it cannot refine (an IAF or
  hierarchical guide) is refused, or, where the caller asks for it (``fallback_to_encoder``),
  gives way to the encoder;
- quadrature's K is ``points^L``, for L of at most :data:`MAX_GRID_DIM` dimensions.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import torch

from vaelik.errors import ConfigError, UnsupportedCombinationError
from vaelik.inference.ais import AUTO, AnnealedImportanceSampling, StratifiedStart
from vaelik.inference.blocks import DEFAULT_BLOCK, checked_block, in_blocks
from vaelik.inference.choices import (
    estimator_names,
    make_estimator,
    make_proposal,
    proposal_names,
)
from vaelik.inference.estimators import Estimate, LogWeightEstimator
from vaelik.inference.proposals import EncoderProposal, PriorProposal, Proposal
from vaelik.inference.quadrature import Quadrature
from vaelik.inference.refinement import RefinedProposal
from vaelik.models.contract import MeasurableModel, can_score, check_measurable

#: the layout of :meth:`Plan.values`; a change of layout changes every digest, so it is
#: versioned here and nowhere else (not with vaelik's version)
PLAN_FORMAT = 2
#: ``prior_share: auto`` starts every chain from the prior for latents of at most this many
#: dimensions (chains from p(z) reach the modes an encoder misses there) and every chain from
#: the proposal above (where a path from p(z) of the same length ends nats lower than one from
#: the encoder); docs/results.md shows both cases measured
PRIOR_START_MAX_DIM = 2
#: quadrature integrates over a grid: feasible for latents of at most this many dimensions
MAX_GRID_DIM = 2
#: the estimator settings recorded elsewhere in the values (K, the seed, the proposal used) or
#: that only label reports
RECORDED_APART = ("num_samples", "seed", "proposal", "name")


@dataclass(frozen=True)
class Choice:
    """An automatic choice :func:`resolve` made: the setting, the value chosen and why."""

    setting: str
    value: str
    reason: str

    def text(self) -> str:
        return f"{self.setting} = {self.value} ({self.reason})"


@dataclass(frozen=True)
class Execution:
    """How a plan runs, which never changes its values: the device (None: the model's, when the
    plan runs), the (draw, example) pairs per pass as the estimator holds it (None: by device;
    recorded here for reports, and in the values too, as it shapes the decoder's calls), the
    examples per call (None: the data loader's, else 100)."""

    device: torch.device | None = None
    chunk_size: int | None = None
    batch_size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": None if self.device is None else str(self.device),
            "chunk_size": self.chunk_size,
            "batch_size": self.batch_size,
        }


@dataclass(frozen=True)
class Plan:
    """An estimate of log p(x) resolved for one model (:func:`resolve`): frozen, named and
    digested.

    Attributes:
        estimator: the estimator, with its settings; it computes log-weights ``[K, B]`` for
            this plan and decides nothing.
        model: the model measured (:class:`~vaelik.models.contract.MeasurableModel`).
        requested: the proposal asked for (the encoder where none was).
        proposal: the distribution the draws really come from: ``requested``, the prior
            (``estimator=prior``, or AIS's start from the prior), AIS's stratified mixture, or
            quadrature's uniform box.
        num_samples: K, log-weights per example (grid cells for quadrature).
        seed: mixed with each example's index into its random stream.
        dtype: the model's floating dtype, in which the model's densities are computed (the
            reductions over K run in float64 whatever it is).
        block: examples computed together in every network call, the last block filled up by
            repeating an example (:mod:`vaelik.inference.blocks`), so that no value depends on
            the batch it comes in.
        choices: the automatic choices made, with their reasons.
        execution: device and batch size: never a value's business.
        accept_rules, fallback_to_encoder: what :func:`resolve` was allowed to replace, kept
            for :meth:`with_num_samples`.
    """

    estimator: LogWeightEstimator
    model: MeasurableModel
    requested: Proposal
    proposal: Proposal
    num_samples: int
    seed: int
    dtype: str
    block: int = DEFAULT_BLOCK
    choices: tuple[Choice, ...] = ()
    execution: Execution = field(default_factory=Execution)
    accept_rules: bool = True
    fallback_to_encoder: bool = False

    # -- what the numbers are made of --------------------------------------------------------

    def values(self) -> dict[str, Any]:
        """Everything that determines the values, as plain JSON-ready data (the digest's
        input): ``format``, ``estimator`` (its kind), ``settings`` (``chunk_size`` among them),
        ``num_samples``, ``proposal`` (the one used: ``name`` and ``settings``), ``seed``,
        ``dtype``, ``block``."""
        return {
            "format": PLAN_FORMAT,
            "estimator": self.estimator.kind,
            "settings": value_settings(self),
            "num_samples": self.num_samples,
            "proposal": self.proposal.record(),
            "seed": self.seed,
            "dtype": self.dtype,
            "block": self.block,
        }

    @property
    def digest(self) -> str:
        """sha256 (hex) of :meth:`values` as canonical JSON: sorted keys, no spaces, floats
        as Python writes them (the shortest text that reads back to the same double; an
        infinite setting as ``Infinity``)."""
        text = json.dumps(self.values(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        """What ``summary.json`` stores under ``plan``: the values, the digest, the
        automatic choices and the execution settings."""
        return {
            "digest": self.digest,
            "values": self.values(),
            "choices": [vars(choice) for choice in self.choices],
            "requested_proposal": self.requested.record(),
            "execution": self.execution.to_dict(),
        }

    def describe(self) -> str:
        """One short text: the estimator, K, the proposal used, the seed and dtype, the
        digest's first 12 characters, and every automatic choice with its reason."""
        settings = ", ".join(f"{k}={v}" for k, v in sorted(value_settings(self).items()))
        text = (
            f"{self.estimator.kind} ({settings or 'no settings'}), K={self.num_samples}, "
            f"proposal {self.proposal.name}, seed {self.seed}, {self.dtype}, "
            f"blocks of {self.block}; "
            f"plan {self.digest[:12]}"
        )
        return text + "".join(f"; chosen: {choice.text()}" for choice in self.choices)

    # -- names every report prints -----------------------------------------------------------

    @property
    def estimator_name(self) -> str:
        return self.estimator.name

    @property
    def proposal_name(self) -> str:
        return self.proposal.name

    @property
    def label(self) -> str:
        """``importance, encoder, K=5000``: what a progress bar or a log line names."""
        return f"{self.estimator_name}, {self.proposal_name}, K={self.num_samples}"

    def report(self) -> dict[str, Any]:
        """The names, K and plan every summary carries."""
        plan = self.to_dict()
        return {
            "estimator": self.estimator_name,
            "proposal": self.proposal_name,
            "num_samples": self.num_samples,
            "plan_digest": plan["digest"],
            "plan": plan,
        }

    # -- running it --------------------------------------------------------------------------

    def with_num_samples(self, num_samples: int) -> Plan:
        """The plan of the same estimator with K = ``num_samples``, resolved afresh (AIS's
        stratified start depends on K)."""
        return resolve(
            self.model,
            self.estimator.replace(num_samples=num_samples),
            self.requested,
            device=self.execution.device,
            batch_size=self.execution.batch_size,
            block=self.block,
            accept_rules=self.accept_rules,
            fallback_to_encoder=self.fallback_to_encoder,
        )

    def log_weights(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Log-weights ``[K, B]`` (float64) of ``x [B, ...]`` with dataset indices ``index``,
        computed in blocks of :attr:`block` examples."""
        return in_blocks(partial(self.estimator.log_weights, self), self.block, x, index)

    def estimate(self, x: torch.Tensor, index: torch.Tensor) -> Estimate:
        """Per-example estimates of ``x [B, ...]`` with dataset indices ``index [B]``, computed
        in blocks of :attr:`block` examples."""
        estimate = in_blocks(partial(self.estimator.estimate, self), self.block, x, index)
        self.estimator.notice(estimate)
        return estimate


def value_settings(plan: Plan) -> dict[str, Any]:
    """The estimator's settings that determine values and are not recorded apart, with AIS's
    ``prior_share`` as resolved (``auto`` and the share it chose give the same values)."""
    settings = {  # as the estimator holds them (checked and converted), not as given
        key: getattr(plan.estimator, key, value)
        for key, value in plan.estimator.settings().items()
        if key not in RECORDED_APART
    }
    if isinstance(plan.estimator, AnnealedImportanceSampling):
        settings["prior_share"] = start_share(plan.proposal)
    return settings


def start_share(start: Proposal) -> float:
    """The share of AIS's chains that start from the prior, for its start distribution."""
    if isinstance(start, PriorProposal):
        return 1.0
    if isinstance(start, StratifiedStart):
        return start.share
    return 0.0


def model_dtype(model: Any) -> str:
    """The dtype of the model's first floating parameter (``float32`` for most), else torch's
    default, as text (``float32``)."""
    parameters = getattr(model, "parameters", None)
    for parameter in parameters() if callable(parameters) else ():
        if parameter.is_floating_point():
            return str(parameter.dtype).removeprefix("torch.")
    return str(torch.get_default_dtype()).removeprefix("torch.")


def pick_device(name: str | torch.device | None, model: Any = None) -> torch.device:
    """``None``: the device of the model's parameters (CPU for a model without any); ``auto``:
    this process's CUDA device when available, else CPU; any other name as given."""
    if name is None:
        parameters = getattr(model, "parameters", None)
        first = next(iter(parameters()), None) if callable(parameters) else None
        return first.device if first is not None else torch.device("cpu")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    return torch.device(name)


def chosen_estimator(estimator: str | LogWeightEstimator, settings: dict[str, Any]):
    """``estimator`` by name (:func:`~vaelik.inference.choices.make_estimator`) or as built,
    with ``settings`` (None values left out) replacing its own."""
    changes = {key: value for key, value in settings.items() if value is not None}
    if isinstance(estimator, str):
        return make_estimator(estimator, **changes)
    if not isinstance(estimator, LogWeightEstimator):
        raise ConfigError(
            f"estimator must be a name ({', '.join(estimator_names())}) or an estimator "
            f"object, got {type(estimator).__name__}"
        )
    return estimator.replace(**changes) if changes else estimator


def chosen_proposal(proposal: str | Proposal) -> Proposal:
    """``proposal`` by name (:func:`~vaelik.inference.choices.make_proposal`) or as built."""
    if isinstance(proposal, str):
        return make_proposal(proposal)
    if not isinstance(proposal, Proposal):
        raise ConfigError(
            f"proposal must be a name ({', '.join(proposal_names())}) or a proposal object, "
            f"got {type(proposal).__name__}"
        )
    return proposal


def ais_start(
    estimator: AnnealedImportanceSampling, model: Any, proposal: Proposal, strict: bool
) -> tuple[Proposal, tuple[Choice, ...]]:
    """Where AIS's chains start for ``model``, and the automatic choice made, if any.

    ``prior_share`` = a: the proposal for a = 0, the prior for a = 1, else the stratified
    mixture with round(a K) chains from the prior (at least 1, at most K - 1; a single chain
    cannot be split and starts from the proposal). ``auto``: 1 for latents of at most
    :data:`PRIOR_START_MAX_DIM` dimensions or guides that cannot score latents they did not
    draw, else 0. With ``strict``, refused where ``auto`` would discard ``proposal``."""
    share = estimator.prior_share
    choices: tuple[Choice, ...] = ()
    if share == AUTO:
        low = model.latent_dim <= PRIOR_START_MAX_DIM
        if low or not can_score(model):
            share = 1.0
            reason = (
                f"prior_share=auto: latents of {model.latent_dim} <= {PRIOR_START_MAX_DIM} "
                "dimensions, where chains from the prior reach modes a proposal misses"
                if low
                else "prior_share=auto: the guide cannot score latents it did not draw"
            )
            choices = (Choice("ais.start", "prior", reason),)
            if strict and not isinstance(proposal, PriorProposal):
                raise UnsupportedCombinationError(
                    f"estimator=ais with proposal={proposal.name}: for this model AIS starts "
                    f"every chain from the prior ({reason}), so the proposal would not be "
                    f"used. Pass prior_share=0 to start the chains from {proposal.name}, "
                    "prior_share=auto to accept the rule, or leave the proposal out"
                )
        else:
            share = 0.0
            reason = f"prior_share=auto: latents of {model.latent_dim} > {PRIOR_START_MAX_DIM}"
            choices = (Choice("ais.start", proposal.name, reason),)
    k = estimator.num_samples
    if share == 1:
        return PriorProposal(), choices
    if share == 0 or isinstance(proposal, PriorProposal | StratifiedStart):
        return proposal, choices
    if k < 2:
        single = Choice("ais.start", proposal.name, f"prior_share={share}: one chain, unsplit")
        return proposal, (*choices, single)
    prior_chains = min(max(round(float(share) * k), 1), k - 1)
    return StratifiedStart(proposal, prior_chains, k), choices


def refinable_or_encoder(
    proposal: RefinedProposal, model: Any
) -> tuple[Proposal, tuple[Choice, ...]]:
    """``proposal``, or the encoder with the choice that says why, for a model whose posterior
    the refinement cannot move (an IAF or hierarchical guide)."""
    try:
        proposal.check(model)
    except UnsupportedCombinationError as refused:
        return EncoderProposal(), (Choice("proposal", "encoder", f"not refined: {refused}"),)
    return proposal, ()


def grid_cells(estimator: Quadrature, model: Any) -> int:
    """Quadrature's K = points^L; latents of more than :data:`MAX_GRID_DIM` dimensions are
    refused."""
    if model.latent_dim > MAX_GRID_DIM:
        raise UnsupportedCombinationError(
            f"estimator=quadrature integrates over a grid of the latent space, which is "
            f"feasible for 1 or 2 latent dimensions; this model has {model.latent_dim}. "
            "Use estimator=importance or estimator=ais"
        )
    return estimator.points**model.latent_dim


def resolve(
    model: MeasurableModel,
    estimator: str | LogWeightEstimator = "importance",
    proposal: str | Proposal | None = None,
    *,
    num_samples: int | None = None,
    seed: int | None = None,
    device: str | torch.device | None = None,
    batch_size: int | None = None,
    block: int = DEFAULT_BLOCK,
    accept_rules: bool = False,
    fallback_to_encoder: bool = False,
    **settings: Any,
) -> Plan:
    """Decide every setting of an estimate of log p(x) under ``model``, once.

    Args:
        model: any object meeting :class:`~vaelik.models.contract.MeasurableModel`.
        estimator: ``importance``, ``ais``, ``prior`` (naive Monte Carlo) or ``quadrature``
            (1- or 2-D latents), with the defaults of ``conf/estimator/``; or an estimator
            object.
        proposal: ``encoder``, ``prior``, ``student_t``, ``inflated``, ``defensive``,
            ``refined``, or a proposal object; None (the default): the encoder, which the
            automatic rules may replace (AIS's start). One given here is never silently
            replaced: a rule that would is refused with the fix, unless ``accept_rules``.
        num_samples: K (draws or chains per example), replacing the estimator's.
        seed: the seed mixed into every example's stream key (default: the estimator's, 0).
        device: where to compute (default: the model's parameters' device; ``auto``: CUDA
            when available). Not a value's business.
        batch_size: examples per call (default: the data loader's, else 100). Not a value's
            business either.
        block: examples computed together in every network call (default 32; the last block
            of a batch is filled up by repeating an example). Part of the values: it sets the
            shapes the kernels see. A multiple of it as ``batch_size`` wastes nothing.
        accept_rules: let the automatic rules replace a proposal given here (the choice is
            still reported in the plan): for comparisons across proposals, and for commands
            whose proposal is their config's default rather than the user's.
        fallback_to_encoder: a refined proposal that cannot refine this model's guide (an IAF
            or hierarchical one) gives way to the encoder, reported, instead of being refused
            (a results table measuring several models the same way).
        **settings: the estimator's other settings (``num_steps=100``, ``chunk_size=...``,
            ``prior_share="auto"``).

    Returns:
        :class:`Plan`, frozen: its ``digest``, ``describe()`` and ``to_dict()`` name what the
        numbers will be made of.

    Raises:
        ConfigError: an unknown name or setting, an impossible value.
        UnsupportedCombinationError: a combination that cannot run or that would discard what
            was asked for (before any model work).
    """
    check_measurable(model)
    if batch_size is not None and (isinstance(batch_size, bool) or not batch_size >= 1):
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    strict = proposal is not None and not accept_rules and settings.get("prior_share") != AUTO
    chosen = chosen_estimator(estimator, {**settings, "num_samples": num_samples, "seed": seed})
    requested = chosen_proposal(proposal if proposal is not None else "encoder")
    choices: tuple[Choice, ...] = ()
    base = requested
    if fallback_to_encoder and isinstance(requested, RefinedProposal):
        base, choices = refinable_or_encoder(requested, model)
    if chosen.proposal is not None:  # the estimator draws from its own distribution
        base = chosen.proposal
        if proposal is not None and base.record() != requested.record():
            reason = f"estimator={chosen.name} draws from {base.name}"
            if strict:
                raise UnsupportedCombinationError(
                    f"{reason}, so proposal={requested.name} would not be used: use "
                    f"estimator=importance proposal={requested.name}, or leave the proposal out"
                )
            choices += (Choice("proposal", base.name, reason),)
    if isinstance(chosen, AnnealedImportanceSampling):
        used, start = ais_start(chosen, model, base, strict and chosen.proposal is None)
        choices += start
    else:
        used = base
    k = grid_cells(chosen, model) if isinstance(chosen, Quadrature) else chosen.num_samples
    used.check(model, needs_log_prob=chosen.needs_log_prob)
    where = None if device is None else pick_device(device, model)  # None: the model's, then
    execution = Execution(where, chosen.chunk_size, batch_size)
    plan = Plan(
        estimator=chosen,
        model=model,
        requested=requested,
        proposal=used,
        num_samples=k,
        seed=chosen.seed,
        dtype=model_dtype(model),
        choices=choices,
        execution=execution,
        block=checked_block(block),
        accept_rules=not strict,
        fallback_to_encoder=fallback_to_encoder,
    )
    plan.digest  # noqa: B018 - every value recordable, checked now rather than in a report
    return plan


def with_execution(plan: Plan, **changes: Any) -> Plan:
    """``plan`` with other execution settings (device, batch size): the same values and
    digest."""
    return replace(plan, execution=replace(plan.execution, **changes))
