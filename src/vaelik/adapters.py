"""Models written elsewhere, wrapped so that vaelik can measure them.

- :func:`from_functions`: a plain PyTorch VAE given as ``encode(x) -> (mean, log_var)`` and
  ``decode(z) -> likelihood parameters``, with the likelihood chosen by name from vaelik's heads
  and a standard-normal prior unless another prior is given;
- :func:`from_pythae`: a model of pythae's VAE family (``pip install "vaelik[pythae]"``);
- :data:`from_pyro` (:class:`PyroVAE`): a Pyro model and guide whose latent is one sample site
  (``pip install "vaelik[pyro]"``).

Each returns a :class:`FunctionalVAE`, which meets :class:`~vaelik.models.contract.
MeasurableModel`: ``vaelik.estimate(from_functions(...), x)`` then gives IS, AIS, quadrature and
BDMC numbers with every diagnostic, on the same per-example random streams as vaelik's own
models (a model carrying the same weights gives the same per-example values).

Data may be ``[B, D]`` vectors, ``[B, H, W]`` or ``[B, C, H, W]`` images. vaelik's heads read
parameters laid out as channels x height x width, so a vector of D values is viewed as one
channel of D x 1 "pixels": a head with P parameters per value (gaussian: P = 2, means first, then
log-scales) takes ``decode(z)`` of shape ``[N, P * D]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, Independent, Normal

from vaelik.errors import ConfigError
from vaelik.models import likelihoods
from vaelik.models.contract import ModelContractError, check_latents
from vaelik.models.guides import DiagonalGaussianPosterior
from vaelik.models.likelihoods.base import IMAGE_DIMS
from vaelik.models.priors import StandardNormal

#: the likelihood names :func:`from_functions` takes, and vaelik's head for each
HEADS: dict[str, type[likelihoods.LikelihoodHead]] = {
    "bernoulli": likelihoods.BernoulliHead,
    "gaussian": likelihoods.GaussianHead,
    "categorical": likelihoods.CategoricalHead,
    "discretized_logistic": likelihoods.DiscretizedLogisticHead,
    "discretized_logistic_mixture": likelihoods.DiscretizedLogisticMixtureHead,
}
#: how :func:`from_functions` reads the second output of ``encode``
SPREADS = ("log_var", "scale", "log_scale")

Likelihood = Callable[[torch.Tensor], Distribution]
#: the networks behind a wrapped model's functions, registered so that ``.to``, ``.eval`` and
#: ``.parameters`` reach them
Networks = nn.Module | list[nn.Module] | tuple[nn.Module, ...]


def network_list(modules: Networks) -> nn.ModuleList:
    return nn.ModuleList([modules] if isinstance(modules, nn.Module) else list(modules))


def image_view(event: tuple[int, ...]) -> tuple[int, int, int]:
    """An example's shape as (channels, height, width): ``[D]`` -> (1, D, 1), ``[H, W]`` ->
    (1, H, W), ``[C, H, W]`` as it is."""
    if len(event) == 1:
        return (1, event[0], 1)
    if len(event) == 2:
        return (1, *event)  # type: ignore[return-value]
    if len(event) == IMAGE_DIMS:
        return event  # type: ignore[return-value]
    raise ModelContractError(
        f"examples of shape {event}: vaelik measures vectors [D], images [H, W] or [C, H, W]"
    )


class FunctionalVAE(nn.Module):
    """p(x, z) = p(z) p(x|z) with q(z|x) = N(mean(x), diag sigma(x)^2), from functions.

    Args:
        encode: ``x [B, ...] -> (mean [B, L], spread [B, L])``.
        decode: ``z [N, L] -> likelihood parameters [N, ...]`` (``N`` = K x B at once).
        likelihood: a name of :data:`HEADS`, or a callable ``params [..., P, H, W] ->`` a torch
            distribution with event ``[C, H, W]`` (its ``log_prob`` sums over the pixels).
        latent_dim: L.
        spread: what ``encode``'s second output is: ``log_var`` (log sigma^2), ``log_scale``
            (log sigma) or ``scale`` (sigma).
        prior: p(z), by default N(0, I); any object with ``log_prob(z)``, ``sample(noise)``
            and ``noise_dims`` (vaelik's priors have them).
        modules: the networks behind ``encode`` and ``decode``, registered here so that
            ``.to(device)``, ``.eval()`` and ``.parameters()`` reach them.
        likelihood_options: extra arguments of the head (e.g. ``num_components``).
    """

    def __init__(
        self,
        encode: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
        decode: Callable[[torch.Tensor], torch.Tensor],
        likelihood: str | Likelihood,
        latent_dim: int,
        *,
        spread: str = "log_var",
        prior: Any = None,
        modules: Networks = (),
        likelihood_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if int(latent_dim) != latent_dim or latent_dim < 1:
            raise ConfigError(f"latent_dim must be an integer >= 1, got {latent_dim}")
        if spread not in SPREADS:
            raise ConfigError(f"spread must be one of {', '.join(SPREADS)}, got {spread!r}")
        if isinstance(likelihood, str) and likelihood not in HEADS:
            raise ConfigError(
                f"unknown likelihood {likelihood!r}: choose one of {', '.join(HEADS)}, or give "
                "a callable params -> torch distribution"
            )
        self.encode_fn, self.decode_fn = encode, decode
        self.likelihood = likelihood
        self.likelihood_options = dict(likelihood_options or {})
        self.latent_dim = int(latent_dim)
        self.spread = spread
        self.networks = network_list(modules)
        self.prior = prior if prior is not None else StandardNormal(self.latent_dim)
        self._heads: dict[int, Likelihood] = {}

    def posterior(self, x: torch.Tensor) -> DiagonalGaussianPosterior:
        """q(z|x) for ``x [B, ...]``: ``encode``'s mean and spread, checked."""
        output = self.encode_fn(x)
        if not isinstance(output, tuple | list) or len(output) != 2:
            raise ModelContractError(
                "encode(x) must return (mean, log_var) (or (mean, scale) with spread='scale'), "
                f"got {type(output).__name__}"
            )
        mean, second = output
        for name, value in (("mean", mean), (self.spread, second)):
            if value.shape != (x.shape[0], self.latent_dim):
                raise ModelContractError(
                    f"encode(x) gave a {name} of shape {tuple(value.shape)} for {x.shape[0]} "
                    f"examples; it must be [B, latent_dim] = [{x.shape[0]}, {self.latent_dim}]"
                )
            if not torch.isfinite(value).all():
                raise ModelContractError(
                    f"encode(x) gave NaN or infinite values in its {name} for "
                    f"{int((~torch.isfinite(value)).any(-1).sum())} of {x.shape[0]} examples: "
                    "check the encoder's inputs and weights"
                )
        if self.spread == "log_var":
            scale = torch.exp(0.5 * second)
        elif self.spread == "log_scale":
            scale = torch.exp(second)
        else:
            scale = second
        return DiagonalGaussianPosterior(mean, scale)

    def head(self, param_channels: int) -> Likelihood:
        """The named head for parameters of ``param_channels`` channels (the data channels C
        are those for which the head needs that many), or the given callable."""
        if not isinstance(self.likelihood, str):
            return self.likelihood
        if param_channels not in self._heads:
            head_class = HEADS[self.likelihood]
            for channels in range(1, 5):
                head = head_class(channels, **self.likelihood_options)
                if head.param_channels == param_channels:
                    self._heads[param_channels] = head
                    break
            else:
                raise ModelContractError(
                    f"decode(z) gave {param_channels} parameter channels, which "
                    f"likelihood={self.likelihood} does not fit for 1 to 4 data channels: it "
                    f"needs {head_class(1, **self.likelihood_options).param_channels} per channel"
                )
        return self._heads[param_channels]

    def parameters_per_value(self) -> int:
        """P, the likelihood's parameters per data value (1 for a callable likelihood)."""
        if not isinstance(self.likelihood, str):
            return 1
        return HEADS[self.likelihood](1, **self.likelihood_options).param_channels

    def decode(self, z: torch.Tensor) -> Distribution:
        """p(x|z) for latents ``z [..., L]``: batch ``[...]``, event (C, H, W) (a vector of D
        values as (1, D, 1))."""
        check_latents(z, self, "the posterior or prior")
        flat = z.reshape(-1, z.shape[-1])
        params = self.decode_fn(flat)
        if params.shape[0] != flat.shape[0]:
            raise ModelContractError(
                f"decode(z) gave {params.shape[0]} rows for {flat.shape[0]} latents: it must map "
                "z [N, latent_dim] to parameters [N, ...]"
            )
        if not torch.isfinite(params).all():
            raise ModelContractError(
                "decode(z) gave NaN or infinite likelihood parameters: check the decoder's "
                "weights (a model that diverged in training gives them)"
            )
        layout = params.dim()
        if layout == 2:  # vectors: P parameters for each of D values, P blocks of D
            per_value = self.parameters_per_value()
            view = (per_value, params.shape[1] // per_value, 1)
        else:
            view = image_view(tuple(params.shape[1:]))
        p_x = self.head(view[0])(params.reshape(*z.shape[:-1], *view))
        #: the shape of one example of the data (BDMC gives simulated data back in it)
        self.data_shape: tuple[int, ...] = (
            (view[1],) if layout == 2 else view[1:] if layout == 3 else tuple(p_x.event_shape)
        )
        return p_x

    def log_joint(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x|z) + log p(z) ``[K, B]`` for ``x [B, ...]`` and ``z [K, B, L]``."""
        p_x = self.decode(z)
        event = tuple(p_x.event_shape)
        if math.prod(event) != x[0].numel():
            raise ModelContractError(
                f"decode(z) gave parameters for examples of {math.prod(event)} values, the "
                f"data has {x[0].numel()} (shape {tuple(x.shape[1:])}): with "
                f"likelihood={self.likelihood}, decode must give {self.parameters_per_value()} "
                "parameters per data value"
            )
        return p_x.log_prob(x.reshape(x.shape[0], *event)) + self.prior.log_prob(z)


def from_functions(
    encode: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    decode: Callable[[torch.Tensor], torch.Tensor],
    likelihood: str | Likelihood,
    latent_dim: int,
    **options: Any,
) -> FunctionalVAE:
    """A plain PyTorch VAE as a model vaelik measures (see :class:`FunctionalVAE`); pass the
    networks as ``modules=`` (or ``encode``/``decode`` as bound methods of one module)."""
    owner = getattr(encode, "__self__", None)
    if "modules" not in options and isinstance(owner, nn.Module):
        options["modules"] = owner
    return FunctionalVAE(encode, decode, likelihood, latent_dim, **options)


class BernoulliProbabilities(Distribution):
    """Independent Bernoulli pixels from probabilities ``p`` (a decoder ending in a sigmoid, as
    pythae's), event ``[C, H, W]``: log p(x|z) = sum x log p + (1 - x) log(1 - p), each log
    clamped at -100 as torch's binary cross-entropy (and so pythae) does."""

    def __init__(self, probs: torch.Tensor) -> None:
        self.probs = probs
        super().__init__(probs.shape[:-IMAGE_DIMS], probs.shape[-IMAGE_DIMS:], validate_args=False)

    @property
    def mean(self) -> torch.Tensor:
        return self.probs

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        with torch.no_grad():
            return torch.bernoulli(
                self.probs.expand(self._extended_shape(torch.Size(sample_shape)))
            )

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        probs = self.probs.flatten(-IMAGE_DIMS)
        value = value.flatten(-IMAGE_DIMS)
        return -F.binary_cross_entropy(probs, value.expand_as(probs), reduction="none").sum(-1)


def unit_gaussian(params: torch.Tensor) -> Distribution:
    """N(mean, I) per pixel, event ``[C, H, W]``: pythae's ``mse`` reconstruction loss."""
    return Independent(Normal(params, torch.ones_like(params), validate_args=False), IMAGE_DIMS)


#: pythae's reconstruction losses and the likelihoods they are the negative log of
PYTHAE_LIKELIHOODS: dict[str, Likelihood] = {
    "bce": BernoulliProbabilities,
    "mse": unit_gaussian,
}


def from_pythae(model: nn.Module) -> FunctionalVAE:
    """A pythae VAE-family model (``VAE``, ``BetaVAE``, ``IWAE``, ... : an encoder giving
    ``embedding`` and ``log_covariance``, a decoder giving ``reconstruction``) as a model vaelik
    measures, with pythae's own likelihood: Bernoulli for ``reconstruction_loss="bce"``
    (the decoder gives probabilities), N(mean, I) for ``"mse"``, and a standard-normal prior."""
    config = getattr(model, "model_config", None)
    loss = getattr(config, "reconstruction_loss", None)
    if config is None or not all(
        hasattr(model, name) for name in ("encoder", "decoder", "latent_dim")
    ):
        raise ModelContractError(
            f"{type(model).__name__} is not a pythae VAE-family model (it needs encoder, "
            "decoder, latent_dim and model_config): wrap it with vaelik.adapters.from_functions "
            "instead"
        )
    if loss is None:
        raise ModelContractError(
            f"pythae's {type(model).__name__} is not a VAE-family model: its model_config has no "
            "reconstruction_loss, and an AE, WAE or VQVAE has no posterior q(z|x) and no "
            "likelihood whose log p(x) vaelik could measure"
        )
    # pythae models whose prior is not N(0, I) (and whose posterior is not a diagonal Gaussian):
    # measured as if it were, their numbers would be wrong
    other_priors = {
        "VAMP": "a VampPrior",
        "SVAE": "a uniform prior on the hypersphere (and a von Mises-Fisher posterior)",
        "PoincareVAE": "a prior on the Poincare ball",
    }
    for kind in type(model).__mro__:
        if kind.__name__ in other_priors:
            raise ModelContractError(
                f"pythae's {type(model).__name__} has {other_priors[kind.__name__]}, not the "
                "standard-normal prior from_pythae measures with: wrap its networks with "
                "vaelik.adapters.from_functions and give its prior as prior="
            )
    if loss not in PYTHAE_LIKELIHOODS:
        raise ConfigError(
            f"pythae reconstruction_loss={loss!r}: vaelik reads bce (Bernoulli) and mse "
            "(unit-variance Gaussian) as likelihoods; for another, use from_functions"
        )

    def encode(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        output = model.encoder(x)
        missing = [name for name in ("embedding", "log_covariance") if output.get(name) is None]
        if missing:
            raise ModelContractError(
                f"the pythae encoder's output has no {' and no '.join(missing)}: from_pythae "
                "reads q(z|x) = N(embedding, exp(log_covariance))"
            )
        return output["embedding"], output["log_covariance"]

    def decode(z: torch.Tensor) -> torch.Tensor:
        return model.decoder(z)["reconstruction"]

    return FunctionalVAE(
        encode, decode, PYTHAE_LIKELIHOODS[loss], int(model.latent_dim), modules=model
    )


class PyroPrior(nn.Module):
    """p(z) read from the Pyro model's latent site: a diagonal Normal ``[L]`` whose parameters
    do not depend on x (what a VAE's prior is)."""

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("loc", loc)
        self.register_buffer("scale", scale)
        self.latent_dim = self.noise_dims = loc.shape[-1]

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return Independent(Normal(self.loc, self.scale, validate_args=False), 1).log_prob(z)

    def sample(self, noise: torch.Tensor) -> torch.Tensor:
        return self.loc + self.scale * noise


def normal_parameters(distribution: Any, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """loc and scale of a (possibly ``to_event``-wrapped) Normal, else a ModelContractError."""
    base = distribution
    while hasattr(base, "base_dist"):
        base = base.base_dist
    if not isinstance(base, Normal):
        raise ModelContractError(
            f"the {what}'s latent site is a {type(base).__name__}: vaelik's Pyro adapter reads "
            "a diagonal Normal there (dist.Normal(loc, scale).to_event(1))"
        )
    return base.loc, base.scale


class PyroVAE(nn.Module):
    """A Pyro model and guide as a model vaelik measures.

    The guide's site ``site`` must be a diagonal Normal for each example of a batch (a plate over
    the data), the model's the prior N(loc, scale) of the same L dimensions; the model's other
    sample sites are observed. log p(x, z) is the sum of the model's sites' log-probabilities
    with the latent conditioned on ``z [K, B, L]`` (the plates broadcast over K).
    """

    def __init__(
        self,
        model: Callable[[torch.Tensor], Any],
        guide: Callable[[torch.Tensor], Any],
        latent_dim: int,
        *,
        site: str = "z",
        modules: Networks = (),
    ) -> None:
        super().__init__()
        import pyro  # an optional dependency: pip install "vaelik[pyro]"

        self.pyro = pyro
        self.model_fn, self.guide_fn, self.site = model, guide, site
        self.latent_dim = int(latent_dim)
        self.networks = network_list(modules)
        self._prior: PyroPrior | None = None

    def site_distribution(self, program: Callable, x: torch.Tensor, what: str) -> Any:
        trace = self.pyro.poutine.trace(program).get_trace(x)
        if self.site not in trace.nodes:
            raise ModelContractError(
                f"the Pyro {what} has no sample site {self.site!r}: give site= the name of "
                "the latent's site"
            )
        return trace.nodes[self.site]["fn"]

    class UnreadPrior:
        """p(z) before the model's latent site has been read (on the first batch): it has
        ``noise_dims`` (L), so the model meets the contract, and says what to do if used."""

        def __init__(self, latent_dim: int) -> None:
            self.latent_dim = self.noise_dims = latent_dim

        def unread(self, *args: Any) -> torch.Tensor:
            raise ModelContractError(
                "the Pyro model's prior is read on the first batch: call posterior(x) first"
            )

        log_prob = sample = unread

    @property
    def prior(self) -> PyroPrior | UnreadPrior:
        """p(z) read from the model's latent site on the first batch (an :class:`UnreadPrior`
        until then: ``vaelik.estimate`` checks the contract before it runs a batch)."""
        if self._prior is None:
            return self.UnreadPrior(self.latent_dim)
        return self._prior

    def check_dims(self, loc: torch.Tensor, what: str) -> None:
        """The ``what``'s latent site must have ``latent_dim`` dimensions (its last)."""
        if loc.dim() == 0 or loc.shape[-1] != self.latent_dim:
            raise ModelContractError(
                f"the Pyro {what}'s site {self.site!r} has parameters of shape "
                f"{tuple(loc.shape)}, but latent_dim={self.latent_dim}: the site must be "
                "dist.Normal(loc, scale).to_event(1) with loc [..., latent_dim]"
            )

    def posterior(self, x: torch.Tensor) -> DiagonalGaussianPosterior:
        loc, scale = normal_parameters(self.site_distribution(self.guide_fn, x, "guide"), "guide")
        self.check_dims(loc, "guide")
        if self._prior is None:
            prior_loc, prior_scale = normal_parameters(
                self.site_distribution(self.model_fn, x, "model"), "model"
            )
            self.check_dims(prior_loc, "model")
            shape = (self.latent_dim,)
            self._prior = PyroPrior(
                prior_loc.reshape(-1, *shape)[0].detach(),
                prior_scale.reshape(-1, *shape)[0].detach(),
            )
        loc, scale = (value.expand(x.shape[0], self.latent_dim) for value in (loc, scale))
        return DiagonalGaussianPosterior(loc, scale)

    def log_joint(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        conditioned = self.pyro.poutine.condition(self.model_fn, data={self.site: z})
        trace = self.pyro.poutine.trace(conditioned).get_trace(x)
        trace.compute_log_prob()
        total = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
        for node in trace.nodes.values():
            if node["type"] == "sample":
                total = total + node["log_prob"]
        return total


#: a Pyro ``model(x)`` and ``guide(x)`` whose latent is the one sample site ``site``, as a
#: model vaelik measures: ``from_pyro(model, guide, latent_dim, site="z", modules=...)``
from_pyro = PyroVAE
