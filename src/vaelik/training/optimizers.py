"""Optimisers that torch does not ship.

:class:`AdamNormGrad` is the optimiser of the VampPrior paper's code (Tomczak & Welling 2018):
Adam applied to each parameter tensor's gradient divided by its L2 norm. For a parameter p with
gradient g at step t (betas b1, b2):

    g' = g / (||g||_2 + 1e-7)  (+ weight_decay * p)
    m_t = b1 m_{t-1} + (1 - b1) g',   v_t = b2 v_{t-1} + (1 - b2) g'^2
    p <- p - lr sqrt(1 - b2^t) / (1 - b1^t) * m_t / (sqrt(v_t) + eps)

(``eps`` is added to sqrt(v_t) before the bias correction, as in that code; torch's Adam adds
it after). Every tensor's step has the same scale whatever the size of its gradient, so a
layer whose gradients are tiny (a gate, the pseudo-inputs) moves as fast as the others.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch.optim import Optimizer

#: added to a gradient's norm before dividing by it
NORM_EPS = 1e-7


class AdamNormGrad(Optimizer):
    """Adam on norm-1 gradients (see the module's docstring); the arguments are Adam's."""

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad / (torch.linalg.vector_norm(p.grad) + NORM_EPS)
                if group["weight_decay"] != 0:
                    grad = grad.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                step = state["step"]
                size = group["lr"] * math.sqrt(1 - beta2**step) / (1 - beta1**step)
                p.addcdiv_(exp_avg, exp_avg_sq.sqrt().add_(group["eps"]), value=-size)
        return loss
