"""Two gloo processes on the CPU give the same figures as one: the callback under DDP training,
vaelik-eval under torchrun, and a multirun whose jobs each use DDP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vaelik.evaluation.distributed import process_group

#: distributed runs and sweeps: whole trainings in several processes
pytestmark = pytest.mark.slow

PYTHON = sys.executable
TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
COMMON = [
    "debug=fast",
    "optim.optimizer.lr=0",  # identical weights in both runs: only the evaluation may differ
    "callbacks.log_likelihood.num_examples=37",  # not a multiple of 2: no padding allowed
    "callbacks.log_likelihood.num_samples=16",
    "trainer.enable_progress_bar=false",
]


def run(command: list[str], timeout: int = 600) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK")
    }
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**env, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.fixture(scope="module")
def one_and_two_processes(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ddp")
    run([PYTHON, "-m", "vaelik.cli.train", *COMMON, f"hydra.run.dir={root}/one"])
    run(
        [
            PYTHON,
            "-m",
            "vaelik.cli.train",
            *COMMON,
            "trainer=ddp",
            "trainer.devices=2",
            f"hydra.run.dir={root}/two",
        ]
    )
    return root / "one", root / "two"


def test_callback_under_ddp_equals_one_process(one_and_two_processes):
    one, two = (json.loads((d / "metrics.json").read_text()) for d in one_and_two_processes)
    for key in ("val/log_px", "val/log_px_stderr", "val/bpd", "val/ess"):
        assert two[key] == pytest.approx(one[key], rel=1e-6, abs=1e-6), key
    assert (one_and_two_processes[1] / "train_ddp_process_1.log").exists()  # it did use 2 processes


@pytest.fixture(scope="module")
def hierarchical_flow_checkpoint(tmp_path_factory) -> Path:
    """A two-layer model whose top layer is an IAF, trained a few steps (one process)."""
    root = tmp_path_factory.mktemp("hvae_iaf")
    run(
        [
            PYTHON,
            "-m",
            "vaelik.cli.train",
            "debug=fast",
            "model=hvae",
            "posterior=iaf",
            "posterior.hidden=[32]",
            "latent_dim=4",
            "trainer.enable_progress_bar=false",
            f"hydra.run.dir={root}",
        ]
    )
    return root / "checkpoints/last.ckpt"


@pytest.mark.parametrize("model", ["default", "hvae_iaf"])
def test_eval_under_torchrun_equals_one_process(
    model, one_and_two_processes, hierarchical_flow_checkpoint, tmp_path
):
    checkpoint = (
        one_and_two_processes[0] / "checkpoints/last.ckpt"
        if model == "default"
        else hierarchical_flow_checkpoint
    )
    args = [
        f"ckpt_path={checkpoint}",
        "estimator.num_samples=64",
        "num_examples=41",
        "batch_size=8",
        "split=val",
    ]
    run([PYTHON, "-m", "vaelik.cli.evaluate", *args, f"hydra.run.dir={tmp_path}/one"])
    run(
        [
            TORCHRUN,
            "--nproc_per_node=2",
            f"--master_port={free_port()}",  # not a fixed one: both cases may run at once
            "-m",
            "vaelik.cli.evaluate",
            *args,
            f"hydra.run.dir={tmp_path}/two",
        ]
    )
    one, two = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("one", "two"))
    assert (one["processes"], two["processes"]) == (1, 2)
    assert two["num_examples"] == one["num_examples"] == 41
    # the same draws; only float32 matmul blocking differs (batches split differently), which
    # moves each log p(x) by ~1e-6 of its ~200 nats: 1e-6 relative on the mean, and a few 1e-6
    # absolute on the standard error (a spread of ~1 nat) and the per-example diagnostics
    for key in ("log_px_mean", "log_px_stderr", "bpd", "ess_mean", "khat_mean"):
        assert two[key] == pytest.approx(one[key], rel=1e-6, abs=2e-5), key
    rows = [(tmp_path / d / "per_example.csv").read_text().splitlines() for d in ("one", "two")]
    assert [r.split(",")[0] for r in rows[0]] == [
        r.split(",")[0] for r in rows[1]
    ]  # each index once


def test_multirun_with_ddp_runs_each_job_once(tmp_path):
    sweep = tmp_path / "sweep"
    run(
        [
            PYTHON,
            "-m",
            "vaelik.cli.train",
            "-m",
            "debug=fast",
            "trainer=ddp",
            "trainer.devices=2",
            "latent_dim=4,6",
            "callbacks.log_likelihood.num_examples=10",
            "trainer.enable_progress_bar=false",
            f"hydra.sweep.dir={sweep}",
        ]
    )
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0", "1"]
    for job in jobs:
        assert (sweep / job / "metrics.json").is_file()
        assert (sweep / job / "train_ddp_process_1.log").is_file()  # the child ran this job only
    configs = [
        json.loads(
            json.dumps(__import__("yaml").safe_load((sweep / j / "config.yaml").read_text()))
        )
        for j in jobs
    ]
    assert [c["latent_dim"] for c in configs] == [4, 6]


def free_port() -> int:
    """A port no process listens on now (the system's choice for port 0)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_process_whose_peers_never_come_fails_within_its_timeout(monkeypatch):
    port = free_port()
    for name, value in {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "WORLD_SIZE": "2",
        "RANK": "0",
        "LOCAL_RANK": "0",
    }.items():
        monkeypatch.setenv(name, value)
    start = time.perf_counter()
    expected = "process 0 of 2 waited 2 s.*dist_timeout_s"
    with pytest.raises(RuntimeError, match=expected), process_group(torch.device("cpu"), 2):
        pass
    assert time.perf_counter() - start < 60
    assert not torch.distributed.is_initialized()
