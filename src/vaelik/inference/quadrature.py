"""Exact log p(x) for models with a 1- or 2-dimensional latent: the midpoint rule on a grid.

The box ``[-b, b]^L`` (``L`` = 1 or 2) is cut into ``n^L`` cells of side ``h = 2b / n``, and

    log p(x) = log ∫ p(x|z) p(z) dz  ~  logsumexp_j log p(x, z_j) + L log h

over the cell centres ``z_j``. This is importance sampling with the uniform proposal
``r(z) = (2b)^-L`` on the box, evaluated at the cell centres instead of at random points: the
log-weights are ``log p(x, z_j) + L log 2b``, and the common reduction (log-mean-exp, in float64)
gives the rule exactly. Their normalised ESS is the share of the cells that carries the integral.

For a smooth integrand that vanishes towards the box's edge the midpoint rule converges faster
than any power of h (for a Gaussian bump of width sigma its relative error is about
``2 exp(-2 pi^2 sigma^2 / h^2)``: 1e-8 at h = sigma), so two checks per example say whether it
has converged:

- resolution: the same sum over every second centre in each dimension (a lattice of spacing 2h,
  offset by h/2 from the midpoints of 2h cells, which converges the same way). Once the
  full rule has converged, its own error is far smaller than its difference from this one;
  far from convergence the difference is only a flag, not a bound;
- truncation: the share of the integral in the outermost ring of cells, which is large when the
  integrand has not decayed at the edge of the box (a flag for mass beyond the box, not a bound
  on it: for Gaussian tails that mass is several times the ring's share).

``grid_error`` = |full - half-resolution| + ring share, in nats: the figure to hold against the
tolerance. A posterior narrower than about h, or with mass beyond ``b``, shows
up there; raise ``points`` or ``bound``.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from vaelik.errors import SettingError
from vaelik.inference.diagnostics import log_mean_exp, log_weight_variance, normalized_ess
from vaelik.inference.estimators import Estimate, LogWeightEstimator, ResolvedPlan
from vaelik.inference.log_weights import check_finite, check_positive
from vaelik.inference.proposals import Proposal
from vaelik.options import option_defaults

_QUADRATURE = option_defaults("estimator", "quadrature")


class UniformBox(Proposal):
    """r(z) = (2b)^-L on the box ``[-b, b]^L``, zero outside: the proposal the grid rule is an
    importance sum over. Draws map standard-normal noise through its CDF onto the box."""

    name = "uniform_box"

    def __init__(self, bound: float) -> None:
        self.bound = float(bound)

    def check(self, model: Any, needs_log_prob: bool = False) -> None:
        """Defined for every model: it scores latents by their position alone."""

    def noise_dims(self, model, posterior):
        return model.latent_dim

    def sample(self, model, posterior, noise):
        z = self.bound * (2 * torch.special.ndtr(noise) - 1)
        return z, self.log_prob(model, posterior, z)

    def log_prob(self, model, posterior, z):
        inside = (z.abs() <= self.bound).all(dim=-1)
        log_density = -z.shape[-1] * math.log(2 * self.bound)
        return torch.where(inside, log_density, -math.inf).to(z.dtype)


def cell_centres(points: int, bound: float, dims: int) -> torch.Tensor:
    """The ``points^dims`` centres ``[G, dims]`` of the grid on ``[-bound, bound]^dims``, the
    last dimension varying fastest."""
    h = 2 * bound / points
    axis = -bound + h * (torch.arange(points, dtype=torch.float64) + 0.5)
    mesh = torch.meshgrid(*([axis] * dims), indexing="ij")
    return torch.stack([m.reshape(-1) for m in mesh], dim=-1)


def sub_grid_masks(points: int, dims: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks ``[G]`` over the centres of :func:`cell_centres`: every second centre in each
    dimension (the rule at spacing 2h), and the outermost ring of cells."""
    i = torch.arange(points)
    mesh = torch.meshgrid(*([i] * dims), indexing="ij")
    coords = torch.stack([m.reshape(-1) for m in mesh], dim=-1)
    half = (coords % 2 == 0).all(dim=-1)
    ring = ((coords == 0) | (coords == points - 1)).any(dim=-1)
    return half, ring


class Quadrature(LogWeightEstimator):
    """log p(x) by the midpoint rule on ``points`` cells per latent dimension over
    ``[-bound, bound]^L``, for L = 1 or 2; ``K`` (``num_samples``) is then ``points^L``.

    Args:
        points: cells per dimension (even, >= 4).
        bound: half-width b of the box, in latent units (the standard-normal prior puts
            2e-9 of its mass beyond 6 in each dimension).
        tolerance: the ``grid_error`` (nats) above which an example is reported as not
            converged (a warning; the figure is in the per-example results either way).
        chunk_size: (cell, example) pairs per decoder pass; bounds memory, not the result (None:
            by device, :func:`~vaelik.inference.log_weights.default_chunk_size`).
        name: reported in summaries.
    """

    kind = "quadrature"
    #: computed once by ``vaelik-convergence``: the same exact value, a reference, at every K
    exact_reference = True

    def __init__(
        self,
        points: int = _QUADRATURE["points"],
        bound: float = _QUADRATURE["bound"],
        tolerance: float = _QUADRATURE["tolerance"],
        chunk_size: int | None = _QUADRATURE["chunk_size"],
        seed: int = 0,
        name: str = _QUADRATURE["name"],
    ) -> None:
        self.points = check_positive("points", points)
        if self.points < 4 or self.points % 2:
            raise SettingError("points", f"must be even and >= 4, got {points}")
        if not 0 < bound < math.inf:
            raise SettingError("bound", f"must be a finite number > 0, got {bound}")
        if not tolerance > 0:
            raise SettingError("tolerance", f"must be > 0 nats, got {tolerance}")
        self.bound = float(bound)
        self.tolerance = float(tolerance)
        super().__init__(self.points, chunk_size, seed, name, UniformBox(self.bound))

    def log_weights(self, plan: ResolvedPlan, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """log p(x, z_j) + L log 2b at every cell centre: ``[G, B]`` float64."""
        model = plan.model
        dims = model.latent_dim
        centres = cell_centres(self.points, self.bound, dims).to(x.device)
        batch = x.shape[0]
        per_pass = max(1, self.pairs_per_pass(x.device) // batch)
        log_w = torch.empty(centres.shape[0], batch, dtype=torch.float64, device=x.device)
        with torch.no_grad():
            for start in range(0, centres.shape[0], per_pass):
                z = centres[start : start + per_pass, None, :].expand(-1, batch, -1)
                log_joint = model.log_joint(x, z.to(x.dtype))
                log_w[start : start + per_pass] = log_joint.double()
        log_w += dims * math.log(2 * self.bound)
        return check_finite(log_w, "quadrature log-densities")

    def grid_error(self, log_w: torch.Tensor, dims: int) -> torch.Tensor:
        """Per example ``[B]``: |rule - rule at spacing 2h| + share of the integral on the ring."""
        half, ring = sub_grid_masks(self.points, dims)
        full = torch.logsumexp(log_w, dim=0)
        coarse = torch.logsumexp(log_w[half.to(log_w.device)], dim=0) + dims * math.log(2)
        ring_share = torch.exp(torch.logsumexp(log_w[ring.to(log_w.device)], dim=0) - full)
        return (full - coarse).abs() + ring_share

    def estimate(self, plan: ResolvedPlan, x: torch.Tensor, index: torch.Tensor) -> Estimate:
        log_w = self.log_weights(plan, x, index)
        log_px = log_mean_exp(log_w)
        grid_error = self.grid_error(log_w, plan.model.latent_dim)
        estimate = Estimate(
            log_px=log_px,
            mc_stderr=torch.full_like(log_px, math.nan),  # deterministic: grid_error instead
            ess=normalized_ess(log_w),
            log_weight_var=log_weight_variance(log_w),
            khat=torch.full_like(log_px, math.nan),  # a lattice is not a sample: no PSIS fit
            grid_error=grid_error,
            # NaN (no cell with any mass) counts as unconverged
            flagged=(~(grid_error <= self.tolerance)).double(),
        )
        return estimate

    def notice(self, estimate: Estimate) -> None:
        """Warn where examples of a batch's estimate did not converge."""
        unconverged = int(estimate.flagged.sum())
        if unconverged:
            warnings.warn(
                f"quadrature: {unconverged} of {len(estimate.log_px)} examples changed by more "
                f"than {self.tolerance} nats between spacings h and 2h or have mass at the box's "
                f"edge (largest grid_error {estimate.grid_error.max().item():.3g}); raise "
                "estimator.points or estimator.bound",
                stacklevel=3,
            )
