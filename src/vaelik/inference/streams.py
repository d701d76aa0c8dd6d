"""Per-example random streams: the draws an example gets depend on its dataset index, not on the
batch, the chunk or the process it lands in.

Every draw belongs to a block of ``BLOCK_SIZE`` consecutive draws of one example. Before a block
is drawn, the global generator is seeded with ``stream_key(seed, index, step, block)``, so any
chunking of the K draws (or of the batch) reproduces the same numbers, and an example gets the
same estimate on one process or on many. Streams give *base noise* (standard normals, uniforms,
gammas); guides and proposals turn noise into latents, so this holds for every guide.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

BLOCK_SIZE = 256
_MASK = (1 << 64) - 1

NoiseFunction = Callable[[int], torch.Tensor]


def _splitmix64(value: int) -> int:
    value = (value + 0x9E3779B97F4A7C15) & _MASK
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK
    return value ^ (value >> 31)


def stream_key(*parts: int) -> int:
    """A 63-bit seed mixing integer ``parts`` (e.g. run seed, example index, step, block)."""
    key = 0
    for part in parts:
        key = _splitmix64(key ^ (int(part) & _MASK))
    return key >> 1


def keyed_draws(draw: NoiseFunction, keys: Sequence[int], start: int, stop: int) -> torch.Tensor:
    """Draws ``start..stop-1`` of every example, stacked ``[stop - start, B, *event]``.

    Args:
        draw: ``n -> [n, *event]``, n draws from the global generator (which this function
            seeds), the same function for every example.
        keys: one stream key per example of the batch (see :func:`stream_key`).
        start, stop: which draws of each example's stream to return.
    """
    if not 0 <= start < stop:
        raise ValueError(f"need 0 <= start < stop, got {start}, {stop}")
    columns = []
    first_block, last_block = start // BLOCK_SIZE, (stop - 1) // BLOCK_SIZE
    cuda_devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    generators = [torch.default_generator] + [
        torch.cuda.default_generators[d] for d in cuda_devices
    ]
    with torch.random.fork_rng(devices=cuda_devices):
        for key in keys:
            blocks = []
            for block in range(first_block, last_block + 1):
                block_key = stream_key(key, block)
                for generator in generators:  # not torch.manual_seed: it queues lazy CUDA calls
                    generator.manual_seed(block_key)
                blocks.append(draw(BLOCK_SIZE))
            stream = torch.cat(blocks)
            offset = first_block * BLOCK_SIZE
            columns.append(stream[start - offset : stop - offset])
    return torch.stack(columns, dim=1)


def standard_normal(dims: int, device: torch.device | str) -> NoiseFunction:
    """``n -> [n, dims]`` standard normals from the global generator."""
    return lambda n: torch.randn(n, dims, device=device)
