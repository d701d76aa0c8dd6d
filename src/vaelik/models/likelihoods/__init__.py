"""Likelihood heads: decoder outputs -> a distribution p(x|z) over whole images."""

from vaelik.models.likelihoods.base import IMAGE_DIMS, IncompatibleDataError, LikelihoodHead
from vaelik.models.likelihoods.bernoulli import BernoulliHead, BernoulliImage
from vaelik.models.likelihoods.categorical import CategoricalHead, CategoricalImage
from vaelik.models.likelihoods.gaussian import GaussianHead
from vaelik.models.likelihoods.logistic import (
    DiscretizedLogisticHead,
    DiscretizedLogisticImage,
    DiscretizedLogisticMixtureHead,
    DiscretizedLogisticMixtureImage,
)

__all__ = [
    "IMAGE_DIMS",
    "BernoulliHead",
    "BernoulliImage",
    "CategoricalHead",
    "CategoricalImage",
    "DiscretizedLogisticHead",
    "DiscretizedLogisticImage",
    "DiscretizedLogisticMixtureHead",
    "DiscretizedLogisticMixtureImage",
    "GaussianHead",
    "IncompatibleDataError",
    "LikelihoodHead",
]
