"""A model whose parameters are constants for a while: what an estimator's pass may assume.

Between two optimiser steps (an evaluation, a validation callback) nothing changes a model's
parameters, so whatever is a function of the parameters alone can be computed once:

- a tanh MLP folds into a sigmoid MLP (:class:`~vaelik.models.folding.TanhMLP`);
- a mixture prior computes its components once (:class:`~vaelik.models.priors.MixturePrior`;
  for the VampPrior that is the guide run on every pseudo-input, which otherwise runs again at
  every ``log_prob``).

Each such module offers ``held_constant()``, a context manager; :func:`frozen` enters those of
every module of a model. The values are those of the modules run as written: only their cost
changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from torch import nn


@contextmanager
def frozen(model: object) -> Iterator[None]:
    """Within the block the parameters of ``model`` must not change: every sub-module with a
    ``held_constant()`` scope enters it (a model that is not an ``nn.Module`` runs as it is)."""
    modules = model.modules() if isinstance(model, nn.Module) else ()
    with ExitStack() as scopes:
        for module in modules:
            held_constant = getattr(module, "held_constant", None)
            if callable(held_constant):
                scopes.enter_context(held_constant())
        yield
