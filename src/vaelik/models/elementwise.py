"""Element-wise functions of the hot path, computed on a CPU from kernels that torch vectorises.

In torch 2.14's CPU kernels ``tanh`` and ``log1p`` cost about 3.5 and 9.4 ns an element on
this project's machine while ``sigmoid``, ``exp`` and ``log`` cost 0.5, 1.0 and 1.9 ns
(``benchmarks/is_throughput.py`` shows their share of importance sampling). So, on a CPU,

    tanh(x) = 2 sigmoid(2x) - 1                                   (absolute error < 3e-7),
    sum_d softplus(l_d) = sum_d max(l_d, 0) - sum_g log prod_{d in g} sigmoid(|l_d|),

since log(1 + e^l) = max(l, 0) + log(1 + e^{-|l|}) and 1 + e^{-|l|} = 1 / sigmoid(|l|). The
pixels are cut into groups g of :data:`GROUP`; each factor lies in [1/2, 1], so a group's
product is at least 2^-64 and cannot underflow float32: one ``log`` per group instead of a
``log1p`` per pixel (and ``sigmoid`` is cheaper than ``exp`` there). Its float32 error is a few
1e-5 nats over 784 pixels, the size of the float32 rounding of the sum itself. Elsewhere (CUDA,
MPS) the native kernels are used. Both are autograd functions whose backward is the usual one:
(1 - tanh^2) g and sigmoid(l) g.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: pixels per product in :func:`softplus_sum` (a product of 64 factors in [1/2, 1] is >= 2^-64)
GROUP = 64


def _fast(x: torch.Tensor) -> bool:
    """True where the sigmoid forms are used: float32 or float64 on a CPU (in half precision
    the product 2 sigmoid(2x) - 1 would lose small values, and torch's own kernels are used)."""
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)


class _Tanh(torch.autograd.Function):
    """2 sigmoid(2x) - 1 with tanh's derivative (1 - y^2); reverse and forward mode, vmap."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return torch.mul(x, 2).sigmoid_().mul_(2).sub_(1)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(output)
        ctx.save_for_forward(output)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (y,) = ctx.saved_tensors
        return grad * (1 - y * y)

    @staticmethod
    def jvp(ctx, tangent: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (y,) = ctx.saved_tensors
        return tangent * (1 - y * y)


def tanh(x: torch.Tensor) -> torch.Tensor:
    """tanh of ``x`` (any shape), through sigmoid on a CPU."""
    return _Tanh.apply(x) if _fast(x) else torch.tanh(x)


class Tanh(nn.Module):
    """:func:`tanh` as a layer: the ``tanh`` activation of vaelik's networks (no parameters, so
    checkpoints written with ``torch.nn.Tanh`` load unchanged)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return tanh(x)


def _log_one_plus_exp_neg_abs_sum(logits: torch.Tensor) -> torch.Tensor:
    """sum_d log(1 + exp(-|l_d|)) = -sum_d log sigmoid(|l_d|) over the last dim, one log per
    :data:`GROUP` elements."""
    factors = logits.abs().sigmoid_()
    whole = factors.shape[-1] - factors.shape[-1] % GROUP
    log_product = factors[..., :whole].unflatten(-1, (-1, GROUP)).prod(-1).log_().sum(-1)
    if whole < factors.shape[-1]:
        log_product = log_product + factors[..., whole:].log().sum(-1)
    return -log_product


class _SoftplusSum(torch.autograd.Function):
    """sum_d softplus(l_d) with the derivative sigmoid(l); reverse and forward mode, vmap."""

    generate_vmap_rule = True

    @staticmethod
    def forward(logits: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return logits.clamp(min=0).sum(-1) + _log_one_plus_exp_neg_abs_sum(logits)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[0])
        ctx.save_for_forward(inputs[0])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (logits,) = ctx.saved_tensors
        return grad.unsqueeze(-1) * torch.sigmoid(logits)

    @staticmethod
    def jvp(ctx, tangent: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (logits,) = ctx.saved_tensors
        return (tangent * torch.sigmoid(logits)).sum(-1)


def softplus_sum(logits: torch.Tensor) -> torch.Tensor:
    """sum_d softplus(l_d) = sum_d log(1 + e^{l_d}) over the last dim: ``[..., D] -> [...]``.

    Half-precision inputs are summed in float32 on every device."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    if not _fast(logits):
        return F.softplus(logits).sum(-1)
    return _SoftplusSum.apply(logits)
