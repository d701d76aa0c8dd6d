"""Encoder and decoder networks. Encoders map images ``[B, C, H, W]`` to features ``[B, F]``;
decoders map latents ``[N, L]`` to likelihood parameters ``[N, P, H, W]``."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn

from vaelik.errors import ConfigError
from vaelik.models.elementwise import Tanh
from vaelik.models.folding import TanhMLP

ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU, "tanh": Tanh, "silu": nn.SiLU}


#: MLPs only: every hidden layer is a :class:`GatedLinear` instead of linear + activation
GATED = "gated"


def check_activation(activation: str, gated_allowed: bool = False) -> str:
    """``activation`` if it names one of :data:`ACTIVATIONS` (or ``gated`` where allowed), else
    a ValueError listing the choices."""
    choices = [*ACTIVATIONS, GATED] if gated_allowed else list(ACTIVATIONS)
    if activation not in choices:
        raise ConfigError(f"unknown activation {activation!r}: choose one of {', '.join(choices)}")
    return activation


def activation_layer(activation: str) -> nn.Module:
    """A fresh module of the named element-wise activation."""
    return ACTIVATIONS[check_activation(activation)]()


class GatedLinear(nn.Module):
    """h = (W x + b) * sigmoid(V x + c) (Dauphin et al. 2017), the hidden layer of the
    VampPrior paper's MLPs: ``[..., in_features] -> [..., out_features]``."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.gate = nn.Linear(in_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * torch.sigmoid(self.gate(x))


def mlp(sizes: Sequence[int], activation: str, activate_last: bool = False) -> nn.Sequential:
    """Linear layers ``sizes[0] -> ... -> sizes[-1]``, ``activation`` between them (and after the
    last with ``activate_last``); with ``activation=gated`` every hidden layer is a
    :class:`GatedLinear` and the last linear (gated too with ``activate_last``); with ``tanh``
    and no ``activate_last`` a :class:`~vaelik.models.folding.TanhMLP` (faster without
    autograd)."""
    check_activation(activation, gated_allowed=True)
    pairs = list(itertools.pairwise(sizes))
    if activation == GATED:
        gated = pairs if activate_last else pairs[:-1]
        hidden = [GatedLinear(fan_in, fan_out) for fan_in, fan_out in gated]
        return nn.Sequential(*hidden, *([] if activate_last else [nn.Linear(*pairs[-1])]))
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(pairs):
        if i > 0:
            layers.append(ACTIVATIONS[activation]())
        layers.append(nn.Linear(fan_in, fan_out))
    if activate_last:
        return nn.Sequential(*layers, ACTIVATIONS[activation]())
    return TanhMLP(*layers) if activation == "tanh" else nn.Sequential(*layers)


class Branches(nn.Module):
    """The branch half of a branch-and-join network (the VampPrior paper's HVAE): inputs
    ``[..., P + sum(sizes)]`` whose last features are several inputs side by side (latent
    layers, say) of ``sizes``; each of those passes through its own layer to ``width`` features
    (a :class:`GatedLinear`, or linear and ``activation``), the first P features (an input
    already branched, such as an encoder's features) pass unchanged, and all are joined:
    ``[..., P + len(sizes) * width]``."""

    def __init__(self, sizes: Sequence[int], width: int, activation: str) -> None:
        super().__init__()
        self.sizes = [int(size) for size in sizes]
        if not self.sizes or min(self.sizes) < 1 or int(width) < 1:
            raise ConfigError(
                f"branches must be a non-empty list of input widths >= 1 and branch_width >= 1, "
                f"got branches={list(sizes)}, branch_width={width}"
            )
        self.width = int(width)
        self.branches = nn.ModuleList(
            mlp([size, self.width], activation, True) for size in self.sizes
        )

    def out_features(self, in_features: int) -> int:
        return in_features - sum(self.sizes) + len(self.sizes) * self.width

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        passed, *parts = h.split([h.shape[-1] - sum(self.sizes), *self.sizes], dim=-1)
        joined = [branch(part) for branch, part in zip(self.branches, parts, strict=True)]
        return torch.cat([passed, *joined], dim=-1)


def branch_and_join(
    in_features: int,
    out_features: int,
    hidden: Sequence[int],
    activation: str,
    branches: int | Sequence[int] | None = None,
    branch_width: int = 300,
) -> nn.Sequential:
    """An MLP ``in_features -> hidden... -> out_features``; with ``branches`` (the widths of the
    last inputs, or their number n for n equal inputs making up all ``in_features``), those
    inputs first pass through :class:`Branches` and the MLP reads the joined features."""
    if branches is None:
        return mlp([in_features, *hidden, out_features], activation)
    if isinstance(branches, int):
        if branches < 1 or in_features % branches:
            raise ConfigError(
                f"branches={branches} cannot split {in_features} inputs into equal parts: give "
                "their number, or their widths as a list"
            )
        branches = [in_features // branches] * branches
    split = Branches(branches, branch_width, activation)
    if sum(split.sizes) > in_features:
        raise ConfigError(
            f"branches={split.sizes} need {sum(split.sizes)} inputs, the layer reads {in_features}"
        )
    return nn.Sequential(
        split, mlp([split.out_features(in_features), *hidden, out_features], activation)
    )


class MLPEncoder(nn.Module):
    """Flatten ``[B, C, H, W]`` and apply an MLP ``C*H*W -> hidden... -> out_features`` (its
    output activated too with ``activate_output``: a branch of a branch-and-join network)."""

    def __init__(
        self,
        in_shape: Sequence[int],
        out_features: int,
        hidden: Sequence[int] = (512, 256),
        activation: str = "relu",
        activate_output: bool = False,
    ) -> None:
        super().__init__()
        self.in_shape = tuple(int(s) for s in in_shape)
        sizes = [math.prod(self.in_shape), *hidden, out_features]
        self.net = mlp(sizes, activation, activate_output)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(-len(self.in_shape)))


class MLPDecoder(nn.Module):
    """MLP ``in_features -> hidden... -> P*H*W``, reshaped to ``out_shape = [P, H, W]``; with
    ``branches`` (the widths of the latent's layers, top first, or their number n for n equal
    layers) each layer first passes through its own layer of ``branch_width`` and the MLP reads
    them joined (see :class:`Branches`)."""

    def __init__(
        self,
        in_features: int,
        out_shape: Sequence[int],
        hidden: Sequence[int] = (256, 512),
        activation: str = "relu",
        branches: int | Sequence[int] | None = None,
        branch_width: int = 300,
    ) -> None:
        super().__init__()
        self.out_shape = tuple(int(s) for s in out_shape)
        self.net = branch_and_join(
            in_features, math.prod(self.out_shape), hidden, activation, branches, branch_width
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).unflatten(-1, self.out_shape)


def downsampled(shape: Sequence[int], times: int) -> tuple[int, int]:
    """H, W after ``times`` halvings; they must divide exactly."""
    height, width = int(shape[-2]), int(shape[-1])
    factor = 2**times
    if height % factor or width % factor:
        raise ConfigError(
            f"images of {height}x{width} cannot be halved {times} times: use fewer channel "
            f"stages (encoder/decoder.channels) or an image size divisible by {factor}"
        )
    return height // factor, width // factor


class GridEncoder(nn.Module):
    """Convolutional ``features`` on ``[B, C, H, W]``, flattened, then a linear ``head``."""

    features: nn.Module
    head: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


class GridDecoder(nn.Module):
    """A linear ``head`` from the latent to ``channels[0]`` maps of H/2^n x W/2^n (n stages),
    then convolutional ``features`` up to ``out_shape = [P, H, W]``."""

    features: nn.Module

    def __init__(self, in_features: int, out_shape: Sequence[int], channels: Sequence[int]) -> None:
        super().__init__()
        self.out_shape = tuple(int(s) for s in out_shape)
        self.start = (int(channels[0]), *downsampled(self.out_shape, len(channels)))
        self.head = nn.Linear(in_features, math.prod(self.start))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.features(self.head(z).unflatten(-1, self.start))


class ConvEncoder(GridEncoder):
    """Strided 4x4 convolutions, one per entry of ``channels``, each halving H and W, then a
    linear layer to ``out_features``: ``[B, C, H, W] -> [B, out_features]``."""

    def __init__(
        self,
        in_shape: Sequence[int],
        out_features: int,
        channels: Sequence[int] = (32, 64),
        activation: str = "relu",
    ) -> None:
        super().__init__()
        height, width = downsampled(in_shape, len(channels))
        layers: list[nn.Module] = []
        previous = int(in_shape[0])
        for width_out in channels:
            layers += [
                nn.Conv2d(previous, width_out, 4, stride=2, padding=1),
                activation_layer(activation),
            ]
            previous = width_out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(previous * height * width, out_features)


class ConvDecoder(GridDecoder):
    """A linear layer to ``channels[0]`` maps of H/2^n x W/2^n, then 4x4 transposed
    convolutions doubling H and W, the last one to the head's ``P`` channels:
    ``[N, L] -> [N, P, H, W]``."""

    def __init__(
        self,
        in_features: int,
        out_shape: Sequence[int],
        channels: Sequence[int] = (64, 32),
        activation: str = "relu",
    ) -> None:
        super().__init__(in_features, out_shape, channels)
        layers: list[nn.Module] = [activation_layer(activation)]
        widths = [*channels, self.out_shape[0]]
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
            layers.append(nn.ConvTranspose2d(fan_in, fan_out, 4, stride=2, padding=1))
            if i < len(channels) - 1:
                layers.append(activation_layer(activation))
        self.features = nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    """x + conv(act(bn(conv(act(bn(x)))))), 3x3 convolutions, same width (pre-activation)."""

    def __init__(self, width: int, activation: str = "relu") -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(width),
            activation_layer(activation),
            nn.Conv2d(width, width, 3, padding=1),
            nn.BatchNorm2d(width),
            activation_layer(activation),
            nn.Conv2d(width, width, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResNetEncoder(GridEncoder):
    """A 3x3 stem, then per entry of ``channels``: a strided 4x4 convolution (halving H, W)
    and ``blocks`` residual blocks with batch norm; then a linear layer to ``out_features``."""

    def __init__(
        self,
        in_shape: Sequence[int],
        out_features: int,
        channels: Sequence[int] = (64, 128),
        blocks: int = 2,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        height, width = downsampled(in_shape, len(channels))
        layers: list[nn.Module] = [nn.Conv2d(int(in_shape[0]), int(channels[0]), 3, padding=1)]
        previous = int(channels[0])
        for width_out in channels:
            layers.append(nn.Conv2d(previous, width_out, 4, stride=2, padding=1))
            layers += [ResidualBlock(width_out, activation) for _ in range(blocks)]
            previous = width_out
        layers += [nn.BatchNorm2d(previous), activation_layer(activation)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(previous * height * width, out_features)


class ResNetDecoder(GridDecoder):
    """A linear layer to ``channels[0]`` maps of H/2^n x W/2^n, then per entry of ``channels``:
    ``blocks`` residual blocks and a 4x4 transposed convolution doubling H, W; batch norm,
    activation and a 3x3 convolution to the head's ``P`` channels."""

    def __init__(
        self,
        in_features: int,
        out_shape: Sequence[int],
        channels: Sequence[int] = (128, 64),
        blocks: int = 2,
        activation: str = "relu",
    ) -> None:
        super().__init__(in_features, out_shape, channels)
        layers: list[nn.Module] = []
        widths = [*channels, channels[-1]]
        for fan_in, fan_out in itertools.pairwise(widths):
            layers += [ResidualBlock(fan_in, activation) for _ in range(blocks)]
            layers.append(nn.ConvTranspose2d(fan_in, fan_out, 4, stride=2, padding=1))
        layers += [
            nn.BatchNorm2d(widths[-1]),
            activation_layer(activation),
            nn.Conv2d(widths[-1], self.out_shape[0], 3, padding=1),
        ]
        self.features = nn.Sequential(*layers)
