"""What an object needs so that vaelik can measure it: the model contract, as a Protocol.

vaelik's estimators never look inside a model. They call, with ``B`` examples, ``K`` draws per
example and ``L`` latent dimensions:

- ``model.posterior(x [B, ...])`` -> a posterior q(z|x) for the batch, with
  ``sample(noise [K, B, noise_dims]) -> (z [K, B, L], log q(z|x) [K, B])`` (a reparameterised
  draw from given standard-normal noise, so that per-example random streams stay exact),
  ``noise_dims``, ``rows(slice)`` (the same posterior for some rows of the batch) and, where it
  can score latents it did not draw (AIS, the defensive mixture), ``log_prob(z [K, B, L]) ->
  [K, B]``; the Student-t and inflated proposals also use its Gaussian base ``loc``, ``scale``
  ``[B, L0]``;
- ``model.log_joint(x [B, ...], z [K, B, L]) -> log p(x|z) + log p(z) [K, B]``;
- ``model.prior``: p(z) with ``log_prob(z [..., L]) -> [...]``, ``sample(noise [...,
  noise_dims]) -> z [..., L]`` and ``noise_dims``;
- ``model.latent_dim``: L.

Optional: ``model.can_score`` (False where the posterior has no ``log_prob`` for latents it did
not draw; True if absent), and ``model.decode(z [N, L])`` -> p(x|z) with ``sample()``, which only
BDMC needs (it simulates data from the model). vaelik's own :class:`~vaelik.models.vae.VAE`
meets the contract; :mod:`vaelik.adapters` wraps models written elsewhere.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from vaelik.errors import VaelikError

#: where a user reads how to wrap a model that does not meet the contract
HOW_TO_WRAP = (
    "wrap a model with encode(x) -> (mean, log_var) and decode(z) -> likelihood parameters with "
    "vaelik.adapters.from_functions(...), a pythae model with vaelik.adapters.from_pythae, a "
    "Pyro model and guide with vaelik.adapters.from_pyro"
)


class ModelContractError(VaelikError, TypeError):
    """An object given as a model lacks part of :class:`MeasurableModel`, or returns values of
    the wrong shape or NaN from its networks."""


class LatentPrior(Protocol):
    """p(z): ``log_prob(z [..., L]) -> [...]``, ``sample(noise [..., noise_dims]) -> [..., L]``."""

    noise_dims: int

    def log_prob(self, z: torch.Tensor) -> torch.Tensor: ...

    def sample(self, noise: torch.Tensor) -> torch.Tensor: ...


class BatchPosterior(Protocol):
    """q(z|x) for one batch: reparameterised draws from given noise, and a batch slice."""

    noise_dims: int

    def sample(self, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def rows(self, rows: slice) -> BatchPosterior: ...


@runtime_checkable
class MeasurableModel(Protocol):
    """What vaelik's estimators need of a model (see the module docstring for the shapes)."""

    latent_dim: int
    prior: LatentPrior

    def posterior(self, x: torch.Tensor) -> BatchPosterior: ...

    def log_joint(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor: ...


#: (attribute, what it is) for every required part of the contract
REQUIRED = (
    ("posterior", "posterior(x) -> q(z|x) with sample(noise)"),
    ("log_joint", "log_joint(x, z) -> log p(x|z) + log p(z)"),
    ("prior", "prior with log_prob(z), sample(noise) and noise_dims"),
    ("latent_dim", "latent_dim, the number of latent dimensions"),
)
PRIOR_PARTS = ("log_prob", "sample", "noise_dims")


def missing_parts(model: Any) -> list[str]:
    """The parts of the contract ``model`` lacks, in words (empty when it meets it)."""
    missing = [what for name, what in REQUIRED if not hasattr(model, name)]
    prior = getattr(model, "prior", None)
    if prior is not None:
        missing += [f"prior.{name}" for name in PRIOR_PARTS if not hasattr(prior, name)]
    for name in ("posterior", "log_joint"):
        if hasattr(model, name) and not callable(getattr(model, name)):
            missing.append(f"{name} (present, but not callable)")
    return missing


def check_measurable(model: Any) -> None:
    """Raise :class:`ModelContractError` naming every missing part if ``model`` does not meet
    :class:`MeasurableModel`."""
    missing = missing_parts(model)
    if missing:
        raise ModelContractError(
            f"{type(model).__name__} cannot be measured: it lacks {'; '.join(missing)}. "
            f"Give a model with the parts of vaelik.MeasurableModel, or {HOW_TO_WRAP}"
        )


def can_score(model: Any) -> bool:
    """Whether ``model``'s posterior scores latents it did not draw (``model.can_score``,
    True where the model does not say)."""
    return bool(getattr(model, "can_score", True))


def posterior_name(model: Any) -> str:
    """The name error messages give the model's posterior: the guide's config name for vaelik's
    own models, else the model's class."""
    guide = getattr(model, "guide", None)
    return getattr(guide, "name", None) or type(model).__name__


def check_latents(z: torch.Tensor, model: Any, what: str) -> None:
    """``z`` must be ``[..., latent_dim]`` latents (from a posterior or prior of ``model``)."""
    if z.shape[-1] != model.latent_dim:
        raise ModelContractError(
            f"{what} gave latents of shape {tuple(z.shape)}, but the model's latent_dim is "
            f"{model.latent_dim}: the last dimension of every latent must be latent_dim"
        )
