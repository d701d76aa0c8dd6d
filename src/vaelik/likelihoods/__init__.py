"""Likelihood heads: decoder outputs -> a distribution p(x|z) over whole images."""

from vaelik.likelihoods.base import IMAGE_DIMS, IncompatibleDataError, LikelihoodHead
from vaelik.likelihoods.bernoulli import BernoulliHead, BernoulliImage
from vaelik.likelihoods.categorical import CategoricalHead, CategoricalImage
from vaelik.likelihoods.gaussian import GaussianHead
from vaelik.likelihoods.logistic import (
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
