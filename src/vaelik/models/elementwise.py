"""Element-wise functions of the hot path, computed on a CPU from kernels that torch vectorises.

torch's CPU kernels for ``tanh`` and ``log1p`` are not vectorised: an element costs several
times what it costs in ``sigmoid``, ``exp`` or ``log`` (``benchmarks/is_throughput.py`` shows
their share of importance sampling). So, on a CPU,

    tanh(x) = 2 sigmoid(2x) - 1                                   (absolute error < 3e-7),

and the Bernoulli log-likelihood of pixels x with logits l,

    sum_d [x_d l_d - log(1 + e^{l_d})]
        = sum_d [(x_d - 1/2) l_d - |l_d| / 2] + sum_g log prod_{d in g} sigmoid(|l_d|),

since log(1 + e^l) = max(l, 0) + log(1 + e^{-|l|}), max(l, 0) = (l + |l|) / 2 and
1 + e^{-|l|} = 1 / sigmoid(|l|). For binary x each term of the first sum is exactly
min(+-l_d, 0) (no cancellation); the pixels of the second are cut into groups g of
:data:`GROUP`, each factor in [1/2, 1], so a group's product is at least 2^-64 and cannot
underflow float32: one ``log`` per group instead of a ``log1p`` per pixel. Its float32 error is
about 1e-4 nats over 784 pixels, the rounding of the float32 sums themselves; two passes over
the logits fewer than x.l - sum softplus(l). Elsewhere (CUDA, MPS) torch's kernels are used.
Both are autograd functions whose derivatives are the usual ones: 1 - tanh^2, and x - sigmoid(l)
in the logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: pixels per product in :func:`bernoulli_log_prob` (64 factors in [1/2, 1]: product >= 2^-64)
GROUP = 64


def sigmoid_forms_apply(x: torch.Tensor) -> bool:
    """True where the sigmoid forms are used: float32 or float64 on a CPU outside autocast (in
    half precision the product 2 sigmoid(2x) - 1 would lose small values, and torch's own
    kernels are used)."""
    return (
        x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and not torch.is_autocast_enabled("cpu")
    )


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
    return _Tanh.apply(x) if sigmoid_forms_apply(x) else torch.tanh(x)


class Tanh(nn.Module):
    """:func:`tanh` as a layer: the ``tanh`` activation of vaelik's networks (no parameters, so
    checkpoints written with ``torch.nn.Tanh`` load unchanged)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return tanh(x)


def _log_sigmoid_abs_sum(magnitudes: torch.Tensor) -> torch.Tensor:
    """sum_d log sigmoid(m_d) over the last dim for ``magnitudes`` m >= 0, one ``log`` per
    :data:`GROUP` elements; overwrites ``magnitudes`` with the sigmoids."""
    factors = magnitudes.sigmoid_()
    whole = factors.shape[-1] - factors.shape[-1] % GROUP
    log_product = factors[..., :whole].unflatten(-1, (-1, GROUP)).prod(-1).log_().sum(-1)
    if whole < factors.shape[-1]:
        log_product = log_product + factors[..., whole:].log().sum(-1)
    return log_product


class _BernoulliLogProb(torch.autograd.Function):
    """sum_d [x_d l_d - log(1 + e^{l_d})] with the derivatives x - sigmoid(l) in l and l in x;
    reverse and forward mode, vmap."""

    generate_vmap_rule = True

    @staticmethod
    def forward(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        magnitudes = logits.abs()
        below_zero = ((x - 0.5) * logits).sub_(magnitudes, alpha=0.5).sum(-1)
        return below_zero + _log_sigmoid_abs_sum(magnitudes)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(*inputs)
        ctx.save_for_forward(*inputs)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        logits, x = ctx.saved_tensors
        grad = grad.unsqueeze(-1)
        grad_logits = grad_x = None
        if ctx.needs_input_grad[0]:
            grad_logits = (grad * (x - torch.sigmoid(logits))).sum_to_size(logits.shape)
        if ctx.needs_input_grad[1]:
            grad_x = (grad * logits).sum_to_size(x.shape)
        return grad_logits, grad_x

    @staticmethod
    def jvp(ctx, tangent_logits, tangent_x) -> torch.Tensor:  # type: ignore[override]
        logits, x = ctx.saved_tensors
        terms = []
        if tangent_logits is not None:
            terms.append((tangent_logits * (x - torch.sigmoid(logits))).sum(-1))
        if tangent_x is not None:
            terms.append((tangent_x * logits).sum(-1))
        return sum(terms[1:], terms[0])


def bernoulli_log_prob(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log prod_d Bernoulli(x_d; sigmoid(l_d)) = sum_d [x_d l_d - log(1 + e^{l_d})] over the
    last dim: ``logits [..., D]``, ``x`` broadcastable to them, ``-> [...]``.

    Half-precision logits are summed in float32 on every device."""
    if x.shape[-1] != logits.shape[-1]:
        raise ValueError(f"pixels {tuple(x.shape)} and logits {tuple(logits.shape)} differ in D")
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    x = x.to(logits.dtype)
    if not sigmoid_forms_apply(logits):
        return (x * logits).sum(-1) - F.softplus(logits).sum(-1)
    return _BernoulliLogProb.apply(logits, x)
