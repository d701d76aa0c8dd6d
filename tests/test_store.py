"""The results store: rows kept per batch, reused bit for bit by the same measurement only,
resumed after a kill -9, shared by concurrent writers, and bad files refused untouched."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import vaelik
from models import SHAPE, tiny_bernoulli_vae
from vaelik.evaluation.store import SCHEMA_VERSION, Measurement, ResultStore, StoreError

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def model_and_data():
    model = tiny_bernoulli_vae(latent_dim=2, seed=4)
    torch.manual_seed(4)
    return model, (torch.rand(40, *SHAPE) < 0.4).float()


def columns_equal(a, b) -> bool:
    return all(
        torch.equal(getattr(a, name).nan_to_num(-7.0), getattr(b, name).nan_to_num(-7.0))
        for name in ("index", "log_px", "mc_stderr", "ess", "log_weight_var", "khat", "flagged")
    )


def test_rows_are_reused_bit_for_bit_and_only_the_missing_ones_computed(model_and_data, tmp_path):
    model, x = model_and_data
    store = tmp_path / "store.sqlite"
    whole = vaelik.estimate(model, x, num_samples=30)
    part = vaelik.estimate(model, x, num_samples=30, examples=range(0, 40, 3), store=store)
    assert part.summary["reused"] == 0
    calls = []
    plan = vaelik.resolve(model, "importance", num_samples=30)
    original = plan.estimator.log_weights

    def counting(plan_, xb, index):
        calls.append(index.clone())
        return original(plan_, xb, index)

    object.__setattr__(plan.estimator, "log_weights", counting)
    rest = vaelik.estimate(model, x, plan=plan, store=store, batch_size=7)
    assert rest.summary["reused"] == len(range(0, 40, 3))
    computed = set(torch.cat(calls).tolist())
    assert computed.isdisjoint(range(0, 40, 3)) and computed == set(range(40)) - set(
        range(0, 40, 3)
    )
    assert columns_equal(rest.results, whole.results)
    assert rest.summary["log_px_mean"] == whole.summary["log_px_mean"]


@pytest.mark.parametrize(
    "change",
    ["num_samples", "seed", "proposal", "weights", "data", "split"],
)
def test_a_change_of_any_value_setting_reuses_nothing(model_and_data, tmp_path, change):
    model, x = model_and_data
    store = tmp_path / "store.sqlite"
    vaelik.estimate(model, x, num_samples=10, store=store, split="test")
    arguments = {"num_samples": 10, "split": "test"}
    other_model, other_x = model, x
    if change == "num_samples":
        arguments["num_samples"] = 11
    elif change == "seed":
        arguments["seed"] = 1
    elif change == "proposal":
        arguments["proposal"] = "student_t"
    elif change == "weights":
        other_model = tiny_bernoulli_vae(latent_dim=2, seed=5)
    elif change == "data":
        other_x = x.clone()
        other_x[0] = 1 - other_x[0]
    else:
        arguments["split"] = "val"
    again = vaelik.estimate(other_model, other_x, store=store, **arguments)
    assert again.summary["reused"] == 0


def test_batches_carry_their_provenance(model_and_data, tmp_path):
    model, x = model_and_data
    plan = vaelik.resolve(model, "importance", num_samples=5, block=1)
    estimates = vaelik.estimate(model, x, plan=plan, store=tmp_path / "s.sqlite", batch_size=16)
    with ResultStore(tmp_path / "s.sqlite") as store:
        measurement = Measurement.of(model, estimates.plan, x, "data")
        assert measurement.key == estimates.summary["measurement"]
        batches = store.batches(measurement)
        assert store.count(measurement) == 40
    assert [b["rows"] for b in batches] == [16, 16, 8]
    first = batches[0]
    assert (
        first["vaelik_version"] == vaelik.__version__
        and first["torch_version"] == torch.__version__
    )
    assert first["device"] == "cpu" and first["dtype"] == "float32" and first["seconds"] > 0
    assert first["machine"]


CORRUPT = "not a vaelik results store, or it is corrupt"


@pytest.mark.parametrize(
    "content, message",
    [
        (
            b"this is not a database at all, just text" * 50,
            "not a vaelik results store, or it is corrupt",
        ),
        (b"SQLite format 3\x00" + b"\x00" * 90, "not a vaelik results store, or it is corrupt"),
    ],
    ids=["text", "truncated"],
)
def test_a_corrupt_store_is_refused_and_left_as_it_is(model_and_data, tmp_path, content, message):
    model, x = model_and_data
    path = tmp_path / "store.sqlite"
    path.write_bytes(content)
    with pytest.raises(StoreError, match=f"store {path} cannot be used .*{message}"):
        vaelik.estimate(model, x, num_samples=5, store=path)
    assert path.read_bytes() == content


def test_another_sqlite_file_or_a_newer_schema_is_refused(model_and_data, tmp_path):
    model, x = model_and_data
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as connection:
        connection.execute("CREATE TABLE people (name TEXT)")
    before = other.read_bytes()
    with pytest.raises(StoreError, match="but not a vaelik results store"):
        vaelik.estimate(model, x, num_samples=5, store=other)
    assert other.read_bytes() == before
    newer = tmp_path / "newer.sqlite"
    ResultStore(newer).close()
    with sqlite3.connect(newer) as connection:
        connection.execute(
            "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),)
        )
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}, newer than"):
        vaelik.estimate(model, x, num_samples=5, store=newer)


def test_a_store_that_cannot_be_made_fails_before_any_example(model_and_data, tmp_path):
    model, x = model_and_data
    (tmp_path / "a file").write_text("")
    plan = vaelik.resolve(model, "importance", num_samples=5)

    def never(*_):
        raise AssertionError("an example was computed before the store was checked")

    object.__setattr__(plan.estimator, "log_weights", never)
    with pytest.raises(StoreError, match="cannot be made .*writable folder"):
        vaelik.estimate(model, x, plan=plan, store=tmp_path / "a file" / "store.sqlite")


WRITER = textwrap.dedent(
    """
    import sys, torch
    sys.path.insert(0, {tests!r})
    import vaelik
    from models import SHAPE, tiny_bernoulli_vae
    model = tiny_bernoulli_vae(latent_dim=2, seed=4)
    torch.manual_seed(4)
    x = (torch.rand(40, *SHAPE) < 0.4).float()
    plan = vaelik.resolve(model, "ais", num_samples=4, num_steps={steps}, block=1)
    estimates = vaelik.estimate(model, x, plan=plan, store=sys.argv[1], batch_size=8)
    print(estimates.summary["reused"])
    """
)


def writer(store: Path, steps: int) -> subprocess.Popen:
    program = WRITER.format(tests=str(TESTS), steps=steps)
    return subprocess.Popen(
        [sys.executable, "-c", program, str(store)], stdout=subprocess.PIPE, text=True
    )


def stored_rows(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path, timeout=30) as connection:
            return connection.execute("SELECT COUNT(*) FROM rows").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_a_kill_9_loses_only_the_batch_in_flight_and_the_rerun_is_bit_identical(
    model_and_data, tmp_path
):
    model, x = model_and_data
    store = tmp_path / "store.sqlite"
    process = writer(store, steps=100)
    deadline = time.monotonic() + 300
    while stored_rows(store) < 8 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.kill()  # SIGKILL: no clean-up of any kind
    process.wait()
    kept = stored_rows(store)
    assert 8 <= kept < 40, "the writer should have been killed midway"
    plan = vaelik.resolve(model, "ais", num_samples=4, num_steps=100, block=1)
    resumed = vaelik.estimate(model, x, plan=plan, store=store, batch_size=8)
    assert resumed.summary["reused"] == kept
    uninterrupted = vaelik.estimate(model, x, plan=plan, batch_size=8)
    assert columns_equal(resumed.results, uninterrupted.results)


def test_concurrent_writers_lose_and_duplicate_nothing(model_and_data, tmp_path):
    model, x = model_and_data
    store = tmp_path / "store.sqlite"
    writers = [writer(store, steps=20) for _ in range(3)]
    for process in writers:
        process.communicate(timeout=600)
        assert process.returncode == 0
    with sqlite3.connect(store) as connection:
        assert connection.execute("SELECT COUNT(*) FROM rows").fetchone()[0] == 40
        assert connection.execute("SELECT COUNT(DISTINCT example) FROM rows").fetchone()[0] == 40
    plan = vaelik.resolve(model, "ais", num_samples=4, num_steps=20, block=1)
    alone = vaelik.estimate(model, x, plan=plan)
    shared = vaelik.estimate(model, x, plan=plan, store=store)
    assert shared.summary["reused"] == 40 and columns_equal(shared.results, alone.results)


def test_weights_with_zero_dimensional_buffers_have_a_digest():
    """BatchNorm's num_batches_tracked is a 0-dim int64 tensor."""
    from torch import nn

    from vaelik.evaluation.store import weights_digest

    norm = nn.BatchNorm1d(3)
    before = weights_digest(norm)
    norm.num_batches_tracked += 1
    assert weights_digest(norm) != before


def test_shard_files_are_read_only_merged_once_and_sqlite_side_files_ignored(
    model_and_data, tmp_path
):
    from vaelik.evaluation.store import shard_files, shard_path

    model, x = model_and_data
    store = tmp_path / "store"  # no suffix: SQLite's -wal and -shm files share the prefix
    shards = [shard_path(store, (i, 2)) for i in range(2)]
    for i, path in enumerate(shards):
        vaelik.estimate(model, x, num_samples=6, examples=range(i, 40, 2), store=path)
    (tmp_path / "store.shard-0-of-2-wal").write_bytes(b"")
    assert shard_files(store) == shards
    contents = [path.read_bytes() for path in shards]
    merged = vaelik.estimate(model, x, num_samples=6, store=store)
    assert merged.summary["reused"] == 40
    assert [path.read_bytes() for path in shards] == contents  # never written to
    with ResultStore(store) as opened_again:
        assert opened_again.merge(shards[0]) == 0  # merged once: not again
        measurement = Measurement.of(model, merged.plan, x, "data")
        assert len(opened_again.batches(measurement)) == len(
            {b["id"] for b in opened_again.batches(measurement)}
        )
