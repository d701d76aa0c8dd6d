"""A tanh MLP run as a sigmoid MLP when no gradient is needed: the same function, with one
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
of the output. The folded weights are computed once and kept until a parameter changes: an
optimiser step, a load, ``.to()`` or any in-place change bumps the parameter's version counter
or moves its storage. (A write through ``param.data`` bumps neither; torch's optimisers and
``load_state_dict`` do not write that way, and nothing in vaelik does.) They are used only
without autograd, on a CPU, in float32 or float64 and outside autocast; training and other
devices run the layers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vaelik.models.elementwise import sigmoid_forms_apply

FoldedLayer = tuple[torch.Tensor, torch.Tensor]


def fold_tanh_layers(linears: list[nn.Linear]) -> list[FoldedLayer]:
    """The (weight, bias) of each layer of the sigmoid form of ``linears`` joined by tanh."""
    folded = []
    last = len(linears) - 1
    for i, layer in enumerate(linears):
        weight, bias = layer.weight.detach(), layer.bias.detach()
        if i > 0:  # the input is 2 s - 1: the -1 moves into the bias
            bias = bias - weight.sum(1)
        weight_scale = (2.0 if i in (0, last) else 4.0) if last else 1.0
        bias_scale = 1.0 if i == last else 2.0
        folded.append((weight * weight_scale, bias * bias_scale))
    return folded


class TanhMLP(nn.Sequential):
    """Linear layers with :class:`~vaelik.models.elementwise.Tanh` between them (the layers of
    :func:`~vaelik.models.networks.mlp` with ``activation=tanh``, same state-dict keys);
    without autograd on a CPU it runs the folded sigmoid form."""

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__(*layers)
        self._folded: list[FoldedLayer] = []
        self._folded_key: tuple = ()

    def linears(self) -> list[nn.Linear]:
        return [layer for layer in self if isinstance(layer, nn.Linear)]

    def folded_layers(self) -> list[FoldedLayer]:
        """The folded weights, recomputed when a parameter changed since the last call."""
        key = tuple((p.data_ptr(), p._version, p.dtype) for p in self.parameters())
        if key != self._folded_key:
            with torch.no_grad():
                self._folded = fold_tanh_layers(self.linears())
            self._folded_key = key
        return self._folded

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or not sigmoid_forms_apply(x):
            return super().forward(x)
        layers = self.folded_layers()
        for weight, bias in layers[:-1]:
            x = F.linear(x, weight, bias).sigmoid_()
        weight, bias = layers[-1]
        return F.linear(x, weight, bias)
