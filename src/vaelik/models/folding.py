"""A tanh MLP run as a sigmoid MLP inside an evaluation: the same function, with one
element-wise pass per hidden layer instead of four.

On a CPU, vaelik computes tanh(u) = 2 sigmoid(2u) - 1 (:mod:`vaelik.models.elementwise`): a
scaling, the sigmoid, a scaling and a shift, each a pass over the activations. For a network
y = A_n tanh(... tanh(A_1 x + a_1) ...) + a_n those affine steps fold into the weights. With
s_i = sigmoid(2 u_i), u_i the i-th pre-activation and 1 the vector of ones,

    2 u_1 = (2 A_1) x + 2 a_1,
    2 u_i = (4 A_i) s_{i-1} + 2 (a_i - A_i 1)          for 1 < i < n,
    y     = (2 A_n) s_{n-1} + (a_n - A_n 1),

so the network is n linear layers with rescaled weights and an in-place sigmoid between them.
Scaling by powers of two is exact; only the bias terms A_i 1 add a rounding, a few float32 ulps
of the output.

The folded weights are a copy, so they are made only inside
:func:`~vaelik.models.frozen.frozen`, a scope in which the parameters cannot change (an
estimator's pass over the draws): the first forward in it folds, the scope's end drops them.
Inside it they are used without autograd, on a CPU, in float32 or float64 and outside autocast,
for a network of alternating linear and tanh layers; everywhere else (training, validation,
other devices, a network edited into another shape) the layers run as written.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from vaelik.models.elementwise import Tanh, sigmoid_forms_apply

FoldedLayer = tuple[torch.Tensor, torch.Tensor]


def fold_tanh_layers(linears: list[nn.Linear]) -> list[FoldedLayer]:
    """The (weight, bias) of each layer of the sigmoid form of ``linears`` joined by tanh."""
    folded = []
    last = len(linears) - 1
    for i, layer in enumerate(linears):
        weight, bias = layer.weight.detach(), layer.bias.detach()
        input_scale = 1.0 if i == 0 else 2.0  # a hidden input is tanh = 2 s - 1 ...
        if i > 0:  # ... whose -1 moves into the bias
            bias = bias - weight.sum(1)
        output_scale = 1.0 if i == last else 2.0  # the next sigmoid takes 2 u
        folded.append((weight * (input_scale * output_scale), bias * output_scale))
    return folded


class TanhMLP(nn.Sequential):
    """Linear layers with :class:`~vaelik.models.elementwise.Tanh` between them (the layers of
    :func:`~vaelik.models.networks.mlp` with ``activation=tanh``, same state-dict keys); inside
    :func:`~vaelik.models.frozen.frozen`, without autograd on a CPU, it runs the folded sigmoid
    form."""

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__(*layers)
        self._folding = False
        self._folded: list[FoldedLayer] | None = None

    def linears(self) -> list[nn.Linear]:
        """The linear layers, in order."""
        return [m for m in self if isinstance(m, nn.Linear)]

    def alternates(self) -> bool:
        """True for Linear (with bias), Tanh, Linear, ..., Linear: the shape folding assumes."""
        layers = list(self)
        return (
            len(layers) % 2 == 1
            and all(isinstance(m, nn.Linear) and m.bias is not None for m in layers[::2])
            and all(isinstance(m, Tanh) for m in layers[1::2])
        )

    def folds(self, x: torch.Tensor) -> bool:
        """True inside :func:`~vaelik.models.frozen.frozen` for an alternating network, without
        autograd, where the sigmoid forms apply to ``x``."""
        return self._folding and not torch.is_grad_enabled() and sigmoid_forms_apply(x)

    @contextmanager
    def held_constant(self) -> Iterator[None]:
        """Within the block (:func:`~vaelik.models.frozen.frozen`) the network runs folded where
        it alternates linear and tanh layers; the folded copies are dropped at its end. A scope
        inside another keeps the outer one's copies."""
        if self._folding:
            yield
            return
        self._folding, self._folded = self.alternates(), None
        try:
            yield
        finally:
            self._folding, self._folded = False, None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.folds(x):
            return super().forward(x)
        if self._folded is None:
            self._folded = fold_tanh_layers(self.linears())
        for weight, bias in self._folded[:-1]:
            x = F.linear(x, weight, bias).sigmoid_()
        weight, bias = self._folded[-1]
        return F.linear(x, weight, bias)
