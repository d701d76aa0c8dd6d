"""Fixed example blocks: every network call of an estimate has shapes set by the plan alone.

A network's output for one row can change in its last bits with the number of rows it is
computed with: matrix and convolution kernels pick their algorithm (and so their order of
summation) by shape, and HMC's accept/reject turns a last-bit difference into a different
chain. So that an example's value is a pure function of (weights, plan, seed, index), whatever
the batch it comes in, the subset, the order or the number of processes, a plan computes in
blocks of exactly ``block`` examples: a batch is cut into blocks, and the last block is filled
up by repeating its last example (whose copies are computed and dropped). Within a block, the
estimators' own chunking depends only on the block, K and ``chunk_size``, so every call has
the same shapes. Rows of one call do not depend on each other's values (the model is in eval
mode), only on the call's shape and on where in it they are: an elementwise kernel computes
the remainder after its last whole vectors with scalar code, whose rounding may differ, so a
block is 1 example (always at the same place) or a multiple of :data:`VECTOR_ROWS` (no
remainder in any tensor with the examples as a dimension).

The cost: at most ``block - 1`` repeated examples per batch and process (none where the
batch size is a multiple of ``block``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import TypeVar

import torch

from vaelik.errors import ConfigError
from vaelik.inference.estimators import Estimate

#: a block other than 1 must be a multiple of this: then every tensor with the examples as a
#: dimension has a multiple of 32 elements, and no example falls in the scalar remainder that
#: vectorised CPU kernels (two AVX-512 vectors of floats: 32) compute with other rounding
VECTOR_ROWS = 32
#: examples per block: small enough that a call on a few examples wastes little, large enough
#: that the kernels run their batched paths (docs/benchmarks.md measures the cost)
DEFAULT_BLOCK = 32

Result = TypeVar("Result", torch.Tensor, Estimate)


def checked_block(block: int) -> int:
    """``block`` as examples per block: 1, or a multiple of :data:`VECTOR_ROWS`."""
    if (
        isinstance(block, bool)
        or not isinstance(block, int)
        or block < 1
        or (block != 1 and block % VECTOR_ROWS)
    ):
        raise ConfigError(
            f"block must be 1 or a multiple of {VECTOR_ROWS} (examples per block), got "
            f"{block!r}: other sizes leave examples in the kernels' scalar remainder, whose "
            "rounding depends on where an example falls"
        )
    return block


def filled(tensor: torch.Tensor, size: int) -> torch.Tensor:
    """``tensor [b, ...]`` with its last row repeated up to ``size`` rows."""
    missing = size - tensor.shape[0]
    if missing <= 0:
        return tensor
    return torch.cat([tensor, tensor[-1:].expand(missing, *tensor.shape[1:])])


def first_examples(result: Result, count: int) -> Result:
    """The first ``count`` examples of a block's result: log-weights ``[K, block]`` or an
    :class:`Estimate` of ``[block]`` columns."""
    if isinstance(result, Estimate):
        return Estimate(**{f.name: getattr(result, f.name)[:count] for f in fields(Estimate)})
    return result[..., :count]


def joined(parts: list[Result]) -> Result:
    """Block results side by side, along the example dimension."""
    if isinstance(parts[0], Estimate):
        return Estimate(
            **{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(Estimate)}
        )
    return torch.cat(parts, dim=-1)


def in_blocks(
    compute: Callable[..., Result],
    block: int,
    x: torch.Tensor,
    index: torch.Tensor,
    *per_example: torch.Tensor,
) -> Result:
    """``compute(x, index, *per_example)`` on blocks of exactly ``block`` examples of
    ``x [B, ...]``, ``index [B]`` (and tensors ``[B, ...]`` that go with them), joined back
    into the result for the ``B`` examples (log-weights ``[K, B]`` or an Estimate ``[B]``)."""
    parts = []
    for start in range(0, x.shape[0], block):
        rows = slice(start, start + block)
        count = x[rows].shape[0]
        inputs = [filled(t[rows], block) for t in (x, index, *per_example)]
        parts.append(first_examples(compute(*inputs), count))
    return joined(parts)
