"""Annealed importance sampling (Neal 2001) from the proposal to the posterior, with HMC moves.

For an example x, chains start at z ~ r(z|x) and move through the geometric path

    pi_t(z) ∝ r(z|x)^(1 - beta_t) p(x, z)^beta_t,   0 = beta_0 < beta_1 < ... < beta_T = 1,

each step adding (beta_t - beta_{t-1}) [log p(x, z) - log r(z|x)] to the chain's log-weight and
then moving z by an HMC transition that leaves pi_t invariant. exp(log w) is an unbiased estimate
of p(x) for any path or transition (Wu, Burda, Salakhutdinov & Grosse 2017 use this to check IS
numbers of decoder-based models); the estimate log (1/K) sum_k w_k is what the estimators report.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import torch

from vaelik.errors import ConfigError, SettingError
from vaelik.inference.estimators import LogWeightEstimator, ResolvedPlan
from vaelik.inference.joint_gradient import JointGradient, gradient_of
from vaelik.inference.log_weights import (
    BatchChunk,
    batch_chunks,
    check_finite,
    check_positive,
    even_rows,
)
from vaelik.inference.proposals import Proposal
from vaelik.inference.streams import Draws, substream_keys
from vaelik.models.frozen import frozen
from vaelik.options import option_defaults

SCHEDULES = ("sigmoid", "linear")
#: ``prior_share: auto``: the start is chosen by :func:`vaelik.inference.plan.ais_start`
AUTO = "auto"
# mixed into the stream keys of reverse AIS, so that it never reuses the forward chains' noise
REVERSE_STREAM = 1
_AIS = option_defaults("estimator", "ais")


def annealing_schedule(
    num_steps: int, kind: str = "sigmoid", sharpness: float = 4.0
) -> list[float]:
    """beta_0 = 0 < ... < beta_T = 1: linear, or the sigmoid schedule of Grosse et al. (2015),
    which spends more steps near beta = 0 and 1 where the intermediate densities change fastest."""
    if kind not in SCHEDULES:
        raise ConfigError(f"unknown schedule {kind!r}: choose one of {', '.join(SCHEDULES)}")
    t = torch.linspace(0.0, 1.0, num_steps + 1, dtype=torch.float64)
    if kind == "linear":
        return t.tolist()
    s = torch.sigmoid(sharpness * (2 * t - 1))
    return ((s - s[0]) / (s[-1] - s[0])).tolist()


def checked_prior_share(value: float | str) -> float | str:
    """``auto`` or a share in [0, 1]; anything else is a ConfigError naming the choices."""
    if value == AUTO:
        return AUTO
    try:
        share = math.nan if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        share = math.nan
    if not 0 <= share <= 1:
        raise SettingError("prior_share", f"must be auto or a number in [0, 1], got {value!r}")
    return share


class StratifiedStart(Proposal):
    """AIS's initial distribution s(z|x) = a p(z) + (1 - a) r(z|x): the prior mixed with the
    run's proposal r, chain k of K starting from the prior exactly when k < a K.

    With the components fixed per chain (stratified) rather than drawn, the AIS estimate stays
    unbiased because a = (chains from the prior) / K exactly, and every example has chains
    from both. The prior's chains can reach posterior modes that r (the encoder) misses, and
    the prior's share of the intermediate densities lets r's chains leave a wrong mode too.
    Noise: the prior's, then r's."""

    def __init__(self, proposal: Proposal, prior_chains: int, num_chains: int) -> None:
        self.proposal = proposal
        self.prior_chains = prior_chains
        self.num_chains = num_chains
        self.share = prior_chains / num_chains
        self.name = f"prior ({prior_chains} of {num_chains} chains) + {proposal.name}"

    def record(self) -> dict[str, Any]:
        return {
            "name": "stratified",
            "settings": {
                "prior_chains": self.prior_chains,
                "num_chains": self.num_chains,
                "proposal": self.proposal.record(),
            },
        }

    def check(self, model: Any, needs_log_prob: bool = False) -> None:
        self.proposal.check(model, needs_log_prob)

    def prepare(self, model, x, posterior, keys):
        return self.proposal.prepare(model, x, posterior, keys)

    def noise_dims(self, model, posterior):
        return model.prior.noise_dims + self.proposal.noise_dims(model, posterior)

    def draw_noise(self, model, posterior, draws):
        return torch.cat(
            [
                draws.normal(model.prior.noise_dims),
                self.proposal.draw_noise(model, posterior, draws),
            ],
            dim=-1,
        )

    def sample(self, model, posterior, noise):
        from_prior = model.prior.sample(noise[..., : model.prior.noise_dims])
        from_proposal, _ = self.proposal.sample(
            model, posterior, noise[..., model.prior.noise_dims :]
        )
        chain = torch.arange(noise.shape[0], device=noise.device).view(-1, 1, 1)
        z = torch.where(chain < self.prior_chains, from_prior, from_proposal)
        return z, self.log_prob(model, posterior, z)

    def log_prob(self, model, posterior, z):
        return torch.logaddexp(
            math.log(self.share) + model.prior.log_prob(z),
            math.log1p(-self.share) + self.proposal.log_prob(model, posterior, z),
        )


class AnnealedImportanceSampling(LogWeightEstimator):
    """AIS with ``num_samples`` chains per example, ``num_steps`` intermediate distributions and
    HMC transitions of ``leapfrog_steps`` leapfrog steps.

    The leapfrog step size is kept per example and adapted during the run towards an acceptance
    rate of ``target_accept`` (times 1.02 above it, 0.98 below), which depends only on the past,
    so every transition still leaves its pi_t invariant. Random numbers come from per-example
    streams keyed by the dataset index and the step.

    Where the chains start (r above) is set by ``prior_share`` = a: the run's proposal for
    a = 0 (it must score latents, ``log r(z|x)`` on the whole path), the prior for a = 1 (the
    path of Wu et al. 2017, which works with every guide), and in between the mixture
    a p(z) + (1 - a) r(z|x), round(a K) chains from the prior (:class:`StratifiedStart`).
    ``auto`` (the default) lets :func:`vaelik.resolve` choose (:func:`vaelik.inference.plan.
    ais_start`): 1 for latents of at most 2 dimensions, where chains from the proposal can all
    fall into a mode that misses most of the mass and chains from the prior find every mode,
    and for guides that cannot score latents; else 0. The plan reports the choice.
    Batches are cut into chunks of at most ``chunk_size`` (chain, example) pairs (None: by device,
    :func:`~vaelik.inference.log_weights.default_chunk_size`); a chunk never splits an example's
    chains.
    """

    kind = "ais"
    needs_log_prob = True

    def __init__(
        self,
        num_samples: int = _AIS["num_samples"],
        num_steps: int = _AIS["num_steps"],
        leapfrog_steps: int = _AIS["leapfrog_steps"],
        step_size: float = _AIS["step_size"],
        target_accept: float = _AIS["target_accept"],
        adapt_step_size: bool = _AIS["adapt_step_size"],
        schedule: str = _AIS["schedule"],
        chunk_size: int | None = _AIS["chunk_size"],
        seed: int = 0,
        name: str = _AIS["name"],
        proposal: Proposal | None = None,
        prior_share: float | str = _AIS["prior_share"],
    ) -> None:
        super().__init__(num_samples, chunk_size, seed, name, proposal)
        self.prior_share = checked_prior_share(prior_share)
        self.num_steps = check_positive("num_steps", num_steps)
        self.leapfrog_steps = check_positive("leapfrog_steps", leapfrog_steps)
        if not step_size > 0:
            raise SettingError("step_size", f"must be > 0, got {step_size}")
        if not 0 < target_accept < 1:
            raise SettingError("target_accept", f"must be in (0, 1), got {target_accept}")
        self.schedule = schedule
        self.betas = annealing_schedule(self.num_steps, schedule)
        self.step_size = float(step_size)
        self.target_accept = float(target_accept)
        self.adapt_step_size = bool(adapt_step_size)

    def log_weights(self, plan: ResolvedPlan, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """AIS log-weights ``[K, B]`` in float64 (the prior's chains first, if any)."""
        return self._run_chains(plan, x, index, z_exact=None)

    def reverse_log_weights(
        self, plan: ResolvedPlan, x: torch.Tensor, index: torch.Tensor, z_exact: torch.Tensor
    ) -> torch.Tensor:
        """Reverse AIS (Grosse, Ghahramani & Adams 2015) log-weights ``[K, B]`` (float64).

        The K chains of each example start at ``z_exact [B, L]``, an exact sample of its
        posterior (for data simulated from the model: the latent that generated it), and run
        the path backwards, from p(z|x) at beta = 1 to the start distribution at beta = 0,
        adding (beta_{t-1} - beta_t) [log p(x, z) - log r(z|x)] at each step. exp(log w) is an
        unbiased estimate of 1 / p(x), so -log (1/K) sum_k w_k is a stochastic upper bound on
        log p(x), as the forward estimate is a lower one: their gap bounds the error of
        forward AIS with this schedule on data like ``x``.
        """
        return self._run_chains(plan, x, index, z_exact=z_exact)

    def _run_chains(
        self,
        plan: ResolvedPlan,
        x: torch.Tensor,
        index: torch.Tensor,
        z_exact: torch.Tensor | None,
    ) -> torch.Tensor:
        """The K chains of every example of ``x``, in chunks of at most ``chunk_size`` (chain,
        example) pairs: forward from the start distribution, or, given ``z_exact [B, L]``,
        backwards from it. Log-weights ``[K, B]`` in float64."""
        model, proposal = plan.model, plan.proposal
        rows = even_rows(x.shape[0], self.pairs_per_pass(x.device) // plan.num_samples)
        log_w = torch.empty(plan.num_samples, x.shape[0], dtype=torch.float64, device=x.device)
        with frozen(model):  # no parameter changes in here
            with torch.no_grad():
                chunks = list(batch_chunks(model, x, index, rows, self.seed, proposal))
            for chunk in chunks:
                start = None
                if z_exact is not None:
                    start = z_exact[chunk.rows].unsqueeze(0).expand(self.num_samples, -1, -1)
                log_w[:, chunk.rows] = self._anneal(model, x[chunk.rows], chunk, proposal, start)
        what = "AIS log-weights" if z_exact is None else "reverse AIS log-weights"
        return check_finite(log_w, what)

    def _anneal(
        self,
        model: Any,
        x: torch.Tensor,
        chunk: BatchChunk,
        proposal: Proposal,
        start: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run the K chains of the examples ``x [b, ...]``; returns their log-weights ``[K, b]``.
        From ``start [K, b, L]`` (exact posterior samples) the path runs backwards."""
        reverse = start is not None
        betas = self.betas[::-1] if reverse else self.betas
        direction = (REVERSE_STREAM,) if reverse else ()  # reverse chains draw their own noise
        densities = PathDensities(model, x, chunk.posterior, proposal)
        if start is None:
            with torch.no_grad():
                start, _ = proposal.sample(
                    model, chunk.posterior, chunk.noise(model, proposal, 0, self.num_samples)
                )
        chains = densities(start.contiguous())
        log_w = torch.zeros(start.shape[:2], dtype=torch.float64, device=start.device)
        step = torch.full((1, start.shape[1], 1), self.step_size, device=start.device)
        for t in range(1, self.num_steps + 1):
            beta, previous = betas[t], betas[t - 1]
            log_w += (beta - previous) * (chains.log_joint.double() - chains.log_r.double())
            keys = substream_keys(chunk.keys, t, *direction)
            noise = Draws(keys, 0, self.num_samples, start.dtype).normal(start.shape[-1] + 1)
            momentum, uniform = noise[..., :-1], torch.special.ndtr(noise[..., -1])
            chains, accepted = self._hmc(chains, momentum, uniform, beta, step, densities)
            if self.adapt_step_size:
                rate = accepted.float().mean(0).view(1, -1, 1)
                step = step * torch.where(rate > self.target_accept, 1.02, 0.98)
        return log_w

    def _hmc(
        self,
        chains: ChainState,
        momentum: torch.Tensor,
        uniform: torch.Tensor,
        beta: float,
        step: torch.Tensor,
        densities: PathDensities,
    ) -> tuple[ChainState, torch.Tensor]:
        """One HMC transition targeting pi_beta: leapfrog, then a Metropolis accept/reject.
        The trajectory starts from the chains' stored gradients, so it costs
        ``leapfrog_steps`` gradient evaluations, and only the last computes densities."""
        start_energy = -chains.log_target(beta) + 0.5 * momentum.pow(2).sum(-1)
        position, p = chains.z, momentum + 0.5 * step * chains.gradient(beta)
        for i in range(self.leapfrog_steps):
            last = i == self.leapfrog_steps - 1
            position = position + step * p
            proposed = densities(position, values=last)
            p = p + (0.5 * step if last else step) * proposed.gradient(beta)
        energy = -proposed.log_target(beta) + 0.5 * p.pow(2).sum(-1)
        log_accept = torch.nan_to_num(start_energy - energy, nan=-math.inf)
        accepted = torch.log(uniform) < log_accept
        return proposed.where(accepted, chains), accepted


@dataclass
class ChainState:
    """Where the K chains of b examples are: latents ``z [K, b, L]``, log r(z|x) and
    log p(x, z) ``[K, b]`` (None between leapfrog steps, where only gradients are needed), and
    their gradients in z ``[K, b, L]``."""

    z: torch.Tensor
    log_r: torch.Tensor | None
    log_joint: torch.Tensor | None
    grad_r: torch.Tensor
    grad_joint: torch.Tensor

    def log_target(self, beta: float) -> torch.Tensor:
        """log pi_beta(z) up to its constant: (1 - beta) log r + beta log p(x, z) ``[K, b]``."""
        assert self.log_r is not None and self.log_joint is not None
        return (1 - beta) * self.log_r + beta * self.log_joint

    def gradient(self, beta: float) -> torch.Tensor:
        """d/dz log pi_beta(z) ``[K, b, L]``."""
        return (1 - beta) * self.grad_r + beta * self.grad_joint

    def where(self, accepted: torch.Tensor, other: ChainState) -> ChainState:
        """This state for the chains ``accepted [K, b]``, ``other`` for the rest."""
        keep = accepted.unsqueeze(-1)
        return ChainState(
            torch.where(keep, self.z, other.z),
            torch.where(accepted, self.log_r, other.log_r),
            torch.where(accepted, self.log_joint, other.log_joint),
            torch.where(keep, self.grad_r, other.grad_r),
            torch.where(keep, self.grad_joint, other.grad_joint),
        )


class PathDensities:
    """log r(z|x), log p(x, z) and their gradients in z, for the chains of one chunk of
    examples ``x [b, ...]`` (with ``posterior``, their q(z|x)); the model's part from
    :class:`~vaelik.inference.joint_gradient.JointGradient`, the proposal's by autograd."""

    def __init__(self, model: Any, x: torch.Tensor, posterior: Any, proposal: Proposal) -> None:
        self.x = x
        self.joint = JointGradient(model)
        self.log_r = functools.partial(proposal.log_prob, model, posterior)

    def __call__(self, z: torch.Tensor, values: bool = True) -> ChainState:
        """The state of chains at ``z [K, b, L]``; with ``values`` False the densities may be
        left out (None)."""
        log_r, grad_r = gradient_of(self.log_r, z)
        log_joint, grad_joint = self.joint(self.x, z, value=values)
        return ChainState(z, log_r if values else None, log_joint, grad_r, grad_joint)
