"""Encoder and decoder networks. Encoders map images ``[B, C, H, W]`` to features ``[B, F]``;
decoders map latents ``[N, L]`` to likelihood parameters ``[N, P, H, W]``."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}


def mlp(sizes: Sequence[int], activation: str) -> nn.Sequential:
    """Linear layers ``sizes[0] -> ... -> sizes[-1]``, ``activation`` between them (not after)."""
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"unknown activation {activation!r}: choose one of {', '.join(ACTIVATIONS)}"
        )
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        if i > 0:
            layers.append(ACTIVATIONS[activation]())
        layers.append(nn.Linear(fan_in, fan_out))
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """Flatten ``[B, C, H, W]`` and apply an MLP ``C*H*W -> hidden... -> out_features``."""

    def __init__(
        self,
        in_shape: Sequence[int],
        out_features: int,
        hidden: Sequence[int] = (512, 256),
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.in_shape = tuple(int(s) for s in in_shape)
        self.net = mlp([math.prod(self.in_shape), *hidden, out_features], activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(-len(self.in_shape)))


class MLPDecoder(nn.Module):
    """MLP ``in_features -> hidden... -> P*H*W``, reshaped to ``out_shape = [P, H, W]``."""

    def __init__(
        self,
        in_features: int,
        out_shape: Sequence[int],
        hidden: Sequence[int] = (256, 512),
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.out_shape = tuple(int(s) for s in out_shape)
        self.net = mlp([in_features, *hidden, math.prod(self.out_shape)], activation)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).unflatten(-1, self.out_shape)
