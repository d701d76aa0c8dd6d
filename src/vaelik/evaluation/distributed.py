"""Sharing examples out among processes and gathering their per-example results back."""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields

import torch
import torch.distributed as dist

from vaelik.evaluation.results import PerExampleResults


def world() -> tuple[int, int]:
    """(rank, world size) of the default process group, or (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def synchronize() -> None:
    """Wait for every process of the group (nothing without one): what every process read
    before it (a results store's rows) is then the same snapshot for all."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shard(indices: Sequence[int]) -> list[int]:
    """This process's share of ``indices``: every world-size-th one, from its rank. Shares are
    disjoint and cover every index once (no padding, unlike a DistributedSampler)."""
    rank, size = world()
    return list(indices)[rank::size]


def gather_results(results: PerExampleResults) -> PerExampleResults:
    """Every process's results joined, on every process, sorted by index; an index seen twice
    (it cannot be, with :func:`shard`) raises instead of being counted twice."""
    _, size = world()
    if size == 1:
        parts = [results]
    else:
        parts = [None] * size
        dist.all_gather_object(
            parts, {f.name: getattr(results, f.name).cpu() for f in fields(results)}
        )
        parts = [PerExampleResults(**part) for part in parts]
    return PerExampleResults.joined(parts)


@contextmanager
def process_group(device: torch.device, timeout_s: float = 300.0) -> Iterator[None]:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): NCCL on GPUs, gloo
    on CPUs; each process then evaluates a disjoint share of the examples. The group is
    destroyed on the way out (left to interpreter exit, gloo can abort a process).

    ``timeout_s`` bounds every wait for the other processes (joining, gathering): a peer that
    never starts or dies outside torchrun fails the run within it, with the cause, instead of
    after torch's default of 30 minutes."""
    joined = int(os.environ.get("WORLD_SIZE", 1)) > 1 and not dist.is_initialized()
    if joined:
        if device.type == "cuda":  # NCCL gathers on the current device: this process's own
            torch.cuda.set_device(device)
        try:
            dist.init_process_group(
                "nccl" if device.type == "cuda" else "gloo",
                timeout=datetime.timedelta(seconds=timeout_s),
            )
        except (RuntimeError, dist.DistStoreError) as error:
            raise RuntimeError(
                f"process {os.environ.get('RANK')} of {os.environ['WORLD_SIZE']} waited "
                f"{timeout_s:g} s for the others to join and gave up ({error}): one of them did "
                "not start or died (see its log). Launch every process with torchrun; "
                "dist_timeout_s sets how long to wait."
            ) from error
    try:
        yield
    finally:
        if joined:
            dist.barrier()
            dist.destroy_process_group()
