"""The gradient of a function of an MLP's output with respect to its input, written by hand.

AIS moves its chains with HMC, and every leapfrog step needs g = d/dz f(net(z)) for a batch of
latents ``z [N, L]``, with no parameter gradients. For the layers of vaelik's MLPs the reverse
pass is short. With dy the gradient at a layer's output:

- linear, y = W x + b:                                 dx = dy W;
- gated, y = a * s with a = W x + b, s = sigmoid(V x + c):
  d[a, g] = [dy s, dy a s (1 - s)] and dx = d[a, g] [W; V];
- tanh, y = tanh(u) (computed as 2 sigmoid(2u) - 1):   du = dy (1 - y^2);
- relu, y = max(u, 0):                                 du = dy [y > 0].

A tanh MLP runs folded into a sigmoid MLP (:mod:`vaelik.models.folding`), where a layer is
s = sigmoid(v), v = W' x + b', and dv = ds s (1 - s). Written out, the forward keeps only what
the backward reads (y for tanh and relu, s for a folded layer, a and s for a gated layer,
nothing for a linear one), a gated layer's two products are one product with the weights
stacked ``[W; V]`` in both directions, and autograd records nothing. A network with any
other layer has no hand-written pass (:func:`reverse_mlp` returns None) and its callers use
autograd.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vaelik.models.elementwise import Tanh
from vaelik.models.elementwise import tanh as sigmoid_form_tanh
from vaelik.models.folding import TanhMLP, fold_tanh_layers
from vaelik.models.networks import GatedLinear

#: what a step's forward keeps for its backward
Saved = Any


class LinearStep:
    """y = W x + b; dx = dy W (nothing kept)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        self.weight = weight.detach()
        self.bias = None if bias is None else bias.detach()

    @classmethod
    def of(cls, layer: nn.Linear) -> LinearStep:
        return cls(layer.weight, layer.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Saved]:
        return F.linear(x, self.weight, self.bias), None

    def backward(self, saved: Saved, grad: torch.Tensor) -> torch.Tensor:
        return grad @ self.weight


class GatedStep:
    """y = (W x + b) * sigmoid(V x + c) as one product with ``[W; V]`` stacked; keeps a and s in
    one ``[N, 2 * out]`` buffer, which the backward overwrites with d[a, g]."""

    def __init__(self, layer: GatedLinear) -> None:
        self.width = layer.linear.out_features
        self.weight = torch.cat([layer.linear.weight, layer.gate.weight]).detach()
        self.bias = torch.cat([layer.linear.bias, layer.gate.bias]).detach()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Saved]:
        both = F.linear(x, self.weight, self.bias)
        a, gate = both[..., : self.width], both[..., self.width :]
        s = gate.sigmoid_()
        return a * s, both

    def backward(self, saved: Saved, grad: torch.Tensor) -> torch.Tensor:
        a, s = saved[..., : self.width], saved[..., self.width :]
        grad_a = grad * s
        s.neg_().add_(1).mul_(a).mul_(grad_a)  # s <- dy a s (1 - s), the gate's gradient
        a.copy_(grad_a)
        return saved @ self.weight


class SigmoidLinearStep(LinearStep):
    """s = sigmoid(W x + b), a layer of a tanh MLP's folded form
    (:func:`~vaelik.models.folding.fold_tanh_layers`); keeps s, dx = [dy s (1 - s)] W."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Saved]:
        s = F.linear(x, self.weight, self.bias).sigmoid_()
        return s, s

    def backward(self, saved: Saved, grad: torch.Tensor) -> torch.Tensor:
        return (grad * saved * (1 - saved)) @ self.weight


class TanhStep:
    """y = 2 sigmoid(2u) - 1 (vaelik's tanh on a CPU, torch's elsewhere); du = dy (1 - y^2)."""

    def forward(self, u: torch.Tensor) -> tuple[torch.Tensor, Saved]:
        y = sigmoid_form_tanh(u)
        return y, y

    def backward(self, saved: Saved, grad: torch.Tensor) -> torch.Tensor:
        return grad * (1 - saved * saved)


class ReluStep:
    """y = max(u, 0); du = dy [y > 0]."""

    def forward(self, u: torch.Tensor) -> tuple[torch.Tensor, Saved]:
        y = torch.relu(u)
        return y, y

    def backward(self, saved: Saved, grad: torch.Tensor) -> torch.Tensor:
        return grad * (saved > 0)


Step = LinearStep | GatedStep | TanhStep | ReluStep


def step_for(layer: nn.Module) -> Step | None:
    """The hand-written step of ``layer``, or None for a layer without one."""
    if isinstance(layer, nn.Linear):
        return LinearStep.of(layer)
    if isinstance(layer, GatedLinear):
        return GatedStep(layer)
    if isinstance(layer, Tanh):
        return TanhStep()
    if isinstance(layer, nn.ReLU):
        return ReluStep()
    return None


class ReverseMLP:
    """A network's steps: :meth:`forward` returns the output and what the backward reads,
    :meth:`backward` maps the gradient at the output to the gradient at the input. The weights
    are read once, at construction: build it where the parameters no longer change."""

    def __init__(self, steps: Sequence[Step]) -> None:
        self.steps = list(steps)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[Saved]]:
        """``x [N, in]`` -> (output ``[N, out]``, the saved values, one per step)."""
        saved = []
        for step in self.steps:
            x, kept = step.forward(x)
            saved.append(kept)
        return x, saved

    def backward(self, saved: list[Saved], grad: torch.Tensor) -> torch.Tensor:
        """d/dx of sum(grad * output): ``grad [N, out]`` -> ``[N, in]``; consumes ``saved``."""
        for step, kept in zip(reversed(self.steps), reversed(saved), strict=True):
            grad = step.backward(kept, grad)
        return grad


def reverse_mlp(network: nn.Module) -> ReverseMLP | None:
    """The hand-written reverse pass of ``network``, a sequence of linear, gated, tanh and relu
    layers (any nesting of ``nn.Sequential``), or None where it has any other layer. A tanh MLP
    that alternates linear and tanh layers runs in its folded sigmoid form."""
    if isinstance(network, TanhMLP) and network.alternates():
        *hidden, (weight, bias) = fold_tanh_layers(network.linears())
        return ReverseMLP(
            [*(SigmoidLinearStep(*layer) for layer in hidden), LinearStep(weight, bias)]
        )
    layers = flat_layers(network) if isinstance(network, nn.Sequential) else [network]
    steps = [step_for(layer) for layer in layers]
    if not steps or any(step is None for step in steps):
        return None
    return ReverseMLP([step for step in steps if step is not None])


def flat_layers(network: nn.Sequential) -> list[nn.Module]:
    """The layers of ``network`` in order, nested ``nn.Sequential`` opened up."""
    layers: list[nn.Module] = []
    for layer in network:
        layers += flat_layers(layer) if isinstance(layer, nn.Sequential) else [layer]
    return layers
