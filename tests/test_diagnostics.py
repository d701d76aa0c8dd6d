"""PSIS k-hat against generalised Pareto samples of known shape, and its edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats as st
import torch

from vaelik.evaluation.results import PerExampleResults
from vaelik.inference.ais import AnnealedImportanceSampling, annealing_schedule
from vaelik.inference.diagnostics import (
    flag_unreliable,
    generalized_pareto_shape,
    pareto_khat,
    pareto_tail_size,
)
from vaelik.inference.estimators import Estimate


@pytest.mark.parametrize("shape", [-0.3, 0.2, 0.5, 0.9])
def test_generalized_pareto_shape_recovers_scipys(shape):
    draws = st.genpareto(c=shape, scale=3.0).rvs(size=(10, 4000), random_state=0)
    estimate = generalized_pareto_shape(torch.from_numpy(np.sort(draws, axis=1)))
    assert abs(estimate.mean().item() - shape) < 0.05
    assert estimate.std().item() < 0.1


def test_khat_grows_with_the_tail_of_lognormal_weights():
    """Log-normal weights with log-sd s have k-hat rising with s, crossing 0.7 around s = 2."""
    torch.manual_seed(0)
    khat = [pareto_khat(torch.randn(5000, 40) * s).mean().item() for s in (0.3, 1.0, 2.5)]
    assert khat == sorted(khat)
    assert khat[0] < 0.5 < 0.7 < khat[2]


def test_khat_undefined_cases_are_nan_and_extremes_are_finite():
    assert pareto_tail_size(24) < 5 and torch.isnan(pareto_khat(torch.randn(24, 3))).all()
    assert torch.isnan(pareto_khat(torch.zeros(1000, 2))).all()  # a flat tail: exact proposal
    extreme = torch.randn(1000, 2, dtype=torch.float64) * 50 - 1e5
    assert torch.isfinite(pareto_khat(extreme)).all()


def test_annealing_schedules():
    for kind in ("linear", "sigmoid"):
        betas = annealing_schedule(50, kind)
        assert betas[0] == 0 and math.isclose(betas[-1], 1) and betas == sorted(betas)
    with pytest.raises(ValueError, match="schedule"):
        annealing_schedule(5, "cosine")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_samples": 0}, "num_samples"),
        ({"num_steps": 0}, "num_steps"),
        ({"leapfrog_steps": 0}, "leapfrog_steps"),
        ({"step_size": 0.0}, "step_size"),
        ({"target_accept": 1.0}, "target_accept"),
        ({"chunk_size": 0}, "chunk_size"),
    ],
)
def test_ais_bad_values_fail_clearly(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AnnealedImportanceSampling(**kwargs)


def test_an_estimate_is_flagged_by_k_hat_or_where_there_is_none_by_its_spread():
    khat = torch.tensor([0.5, 0.9, math.nan, math.nan], dtype=torch.float64)
    spread = torch.tensor([5.0, 0.1, 0.5, 2.0], dtype=torch.float64)
    assert flag_unreliable(khat, spread).tolist() == [0.0, 1.0, 0.0, 1.0]
    # heavy-tailed weights from K = 1000 draws are flagged by k-hat, 16 spread-out chains by
    # their variance, and 16 chains that agree are not
    gen = torch.Generator().manual_seed(0)
    heavy = Estimate.from_log_weights(3 * torch.randn(1000, 2, generator=gen, dtype=torch.float64))
    chains = torch.randn(16, 2, generator=gen, dtype=torch.float64) * torch.tensor([2.0, 0.1])
    few = Estimate.from_log_weights(chains)
    assert heavy.flagged.tolist() == [1.0, 1.0] and few.flagged.tolist() == [1.0, 0.0]
    summaries = [
        PerExampleResults.concatenate([(torch.arange(2), e)]).summary(1) for e in (heavy, few)
    ]
    assert [s["flag_rule"] for s in summaries] == [
        "k-hat > 0.7",
        "log-weight variance > 1 (K too small for a k-hat)",
    ]
    assert [s["flagged_share"] for s in summaries] == [1.0, 0.5]
