"""The results store: every finished batch's per-example values, kept on disk, keyed by what
determines them.

A row is one example's values (the columns of :class:`~vaelik.inference.estimators.Estimate`)
under a **measurement key**: the sha256 of the weights' digest (:func:`weights_digest`, their
content, not their path), the plan's digest (:attr:`vaelik.Plan.digest`: estimator, settings, K,
proposal used, seed, dtype, block, chunk size), the split's name, the data's digest
(:func:`data_digest`, the examples' content) and the :func:`environment` (device type, torch
version, CPU threads). With the example's index, that key determines the value bit for bit
(docs/reference/reproducibility.md), so a row found in the store is the value a new computation
would give: a rerun computes only the rows that are missing.

The store is one SQLite file in WAL mode (standard library, no server). Each batch's rows and
its provenance (vaelik version, git commit when there is one, machine, torch version, device,
dtype, seconds) are committed in one transaction: a process killed mid-batch loses that batch
only. Several processes may write to one local file at once (SQLite's locking; a row already
there is kept, never duplicated). A file that is not a store, is truncated or corrupt, or comes
from a newer schema is refused in one line naming it, and never written to.

Schema (version :data:`SCHEMA_VERSION`)::

    meta(key TEXT PRIMARY KEY, value TEXT)    -- schema_version, store_id, merged:... marks
    measurements(key TEXT PRIMARY KEY, weights TEXT, plan TEXT, split TEXT, data TEXT,
                 plan_json TEXT, environment TEXT, created_at TEXT)
    batches(id INTEGER PRIMARY KEY, measurement TEXT, rows INTEGER, seconds REAL,
            vaelik_version TEXT, git_commit TEXT, machine TEXT, torch_version TEXT,
            device TEXT, dtype TEXT, written_at TEXT)
    rows(measurement TEXT, example INTEGER, log_px REAL, mc_stderr REAL, ess REAL,
         log_weight_var REAL, khat REAL, grid_error REAL, flagged REAL, batch INTEGER,
         PRIMARY KEY (measurement, example))
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from vaelik.errors import ConfigError, VaelikError
from vaelik.evaluation.results import PerExampleResults
from vaelik.inference.estimators import Estimate

#: the schema this vaelik writes and reads; a store of a newer one is refused
SCHEMA_VERSION = 1

#: the per-example value columns, in the order of :class:`Estimate`
VALUE_COLUMNS = tuple(f.name for f in fields(Estimate))

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS measurements (key TEXT PRIMARY KEY, weights TEXT NOT NULL, "
    "plan TEXT NOT NULL, split TEXT NOT NULL, data TEXT NOT NULL, plan_json TEXT NOT NULL, "
    "environment TEXT NOT NULL, created_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS batches (id INTEGER PRIMARY KEY, measurement TEXT NOT NULL, "
    "rows INTEGER NOT NULL, seconds REAL NOT NULL, vaelik_version TEXT, git_commit TEXT, "
    "machine TEXT, torch_version TEXT, device TEXT, dtype TEXT, written_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rows (measurement TEXT NOT NULL, example INTEGER NOT NULL, "
    + ", ".join(f"{column} REAL" for column in VALUE_COLUMNS)
    + ", batch INTEGER NOT NULL, PRIMARY KEY (measurement, example))",
)


#: SQLite's words for faults that are not the file's content, and what to do about each
FAULTS = {
    "locked": "another process held it for over a minute; run again, or give another store=PATH",
    "readonly": "it is read-only; give store=PATH of a writable file, or store=null for none",
    "full": "the disk is full; free space, or give store=PATH on another disk",
    "unable to open": "its folder cannot be written; give store=PATH in a writable folder",
}


#: one measurement, one batch's provenance (its id is SQLite's), one example's row
INSERT_MEASUREMENT = "INSERT OR IGNORE INTO measurements VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
INSERT_BATCH = (
    "INSERT INTO batches (measurement, rows, seconds, vaelik_version, git_commit, machine, "
    "torch_version, device, dtype, written_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
INSERT_ROW = f"INSERT OR IGNORE INTO rows VALUES ({', '.join('?' * (len(VALUE_COLUMNS) + 3))})"


class StoreError(VaelikError):
    """A store file that cannot be used: not a store, corrupt, of a newer schema, or not
    writable. The file is left as it is."""


def weights_digest(model: Any) -> str:
    """sha256 of the model's weights: every entry of its ``state_dict()`` (name, dtype, shape
    and bytes, in name order). Equal for equal weights wherever they were loaded from."""
    state = getattr(model, "state_dict", None)
    if not callable(state):
        raise ConfigError(
            f"a {type(model).__name__} has no state_dict(), so its weights cannot be named: "
            "estimate it without a store (store=None)"
        )
    digest = hashlib.sha256(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    for name, value in sorted(state().items()):
        digest.update(name.encode())
        if isinstance(value, torch.Tensor):
            digest.update(tensor_bytes(value))
        else:
            digest.update(repr(value).encode())
    return digest.hexdigest()


def tensor_bytes(tensor: torch.Tensor) -> bytes:
    """A tensor's dtype, shape and content as bytes (a 0-dim tensor too)."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    content = flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""
    return f"{tensor.dtype}{tuple(tensor.shape)}".encode() + content


def data_digest(dataset: Any) -> str:
    """sha256 of a data set's examples, in index order: the ``x`` of every item (dtype, shape,
    bytes). A tensor's data is hashed whole."""
    source = getattr(dataset, "source", dataset)
    digest = hashlib.sha256()
    if isinstance(source, torch.Tensor):
        digest.update(tensor_bytes(source))
        return digest.hexdigest()
    for position in range(len(dataset)):
        item = dataset[position]
        digest.update(
            tensor_bytes(torch.as_tensor(item[0] if isinstance(item, tuple | list) else item))
        )
    return digest.hexdigest()


def environment(device: torch.device | str) -> str:
    """What, beyond the weights and the plan, sets the kernels a value was computed with: the
    device type, the torch version and the number of CPU threads (a CPU kernel splits its work
    by thread, and a split's remainder rounds otherwise). Rows are reused only within one."""
    kind = torch.device(device).type
    return f"{kind}, torch {torch.__version__}, {torch.get_num_threads()} threads"


@dataclass(frozen=True)
class Measurement:
    """What a row's values are a function of, but for the example's index."""

    weights: str
    plan: str
    split: str
    data: str
    plan_json: str
    environment: str = ""

    @classmethod
    def of(
        cls, model: Any, plan: Any, dataset: Any, split: str, device: torch.device | str = "cpu"
    ) -> Measurement:
        """The measurement of ``plan`` (a :class:`vaelik.Plan`) on ``model``'s weights and the
        examples of ``dataset``, named ``split``, computed on ``device`` (its
        :func:`environment`)."""
        return cls(
            weights=weights_digest(model),
            plan=plan.digest,
            split=str(split),
            data=data_digest(dataset),
            plan_json=json.dumps(plan.values(), sort_keys=True),
            environment=environment(device),
        )

    @property
    def key(self) -> str:
        """sha256 of the four digests and the environment: the rows' key."""
        text = json.dumps([self.weights, self.plan, self.split, self.data, self.environment])
        return hashlib.sha256(text.encode()).hexdigest()


def provenance(device: torch.device | str, dtype: str) -> dict[str, Any]:
    """Where and with what a batch was computed."""
    from vaelik import __version__
    from vaelik.checkpoint import describe_machine

    return {
        "vaelik_version": __version__,
        "git_commit": git_commit(),
        "machine": describe_machine(),
        "torch_version": torch.__version__,
        "device": str(device),
        "dtype": dtype,
    }


def git_commit() -> str | None:
    """The commit of vaelik's own checkout, when it runs from one (else None)."""
    here = Path(__file__).resolve().parent
    try:
        done = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


class ResultStore:
    """A results store at ``path`` (made, with its folder, when missing).

    Opening checks the file: a file that is not a vaelik store, a corrupt one or one of a newer
    schema raises :class:`StoreError` and is not touched; a folder that cannot be written raises
    before any example is computed."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        existed = self.path.exists()
        if existed and not self.path.is_file():
            raise StoreError(f"store {self.path} is not a file: give store=PATH of a file")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._connection = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
            self._check(existed)
        except sqlite3.Error as error:
            raise StoreError(self._unusable(error)) from None
        except OSError as error:
            raise StoreError(
                f"store {self.path} cannot be made ({error.strerror}): give store=PATH in a "
                "writable folder, or store=null for none"
            ) from None
        self._provenance: dict[str, Any] | None = None

    def _unusable(self, error: sqlite3.Error) -> str:
        text = str(error)
        for cause, fix in FAULTS.items():
            if cause in text:
                return f"store {self.path} cannot be used ({text}): {fix}"
        return (
            f"store {self.path} cannot be used ({error}): it is not a vaelik results store, or "
            "it is corrupt or truncated. It was left as it is: move it away, or give another "
            "store=PATH (store=null for none)"
        )

    def _check(self, existed: bool) -> None:
        """Read the schema version (or write the schema into a new, empty file) and make sure
        the file can be written, before any example is computed."""
        connection = self._connection
        tables = {
            name
            for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        if existed and tables and "meta" not in tables:
            raise StoreError(
                f"store {self.path} is an SQLite file but not a vaelik results store (no meta "
                "table): it was left as it is; give another store=PATH"
            )
        if "meta" in tables:
            found = connection.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'"
            ).fetchone()
            version = int(found[0]) if found else None
            if version is None or version > SCHEMA_VERSION:
                raise StoreError(
                    f"store {self.path} has schema version {version}, newer than this vaelik's "
                    f"{SCHEMA_VERSION}: upgrade vaelik to read it, or give another store=PATH"
                )
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        with self._transaction():
            for statement in SCHEMA:
                connection.execute(statement)
            connection.execute(
                "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
            connection.execute(  # names this store in the marks of the stores merged into
                "INSERT OR IGNORE INTO meta VALUES ('store_id', ?)", (uuid.uuid4().hex,)
            )
            # a write now: a read-only file or a full disk fails here, not after a batch
            connection.execute("INSERT OR REPLACE INTO meta VALUES ('last_opened', ?)", (now(),))

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        connection = self._connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if connection.in_transaction:  # SQLite may have rolled back already
                connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def register(self, measurement: Measurement) -> None:
        """Record ``measurement`` (once)."""
        with self._guarded(), self._transaction():
            self._connection.execute(
                INSERT_MEASUREMENT,
                (
                    measurement.key,
                    measurement.weights,
                    measurement.plan,
                    measurement.split,
                    measurement.data,
                    measurement.plan_json,
                    measurement.environment,
                    now(),
                ),
            )

    def rows(self, measurement: Measurement, indices: Sequence[int]) -> PerExampleResults:
        """The stored rows of ``measurement`` for ``indices`` (those there are), by index."""
        wanted = sorted({int(i) for i in indices})
        found: list[tuple] = []
        with self._guarded():
            for start in range(0, len(wanted), 500):
                part = wanted[start : start + 500]
                found += self._connection.execute(
                    f"SELECT example, {', '.join(VALUE_COLUMNS)} FROM rows WHERE measurement = ? "
                    f"AND example IN ({', '.join('?' * len(part))})",
                    (measurement.key, *part),
                ).fetchall()
        found.sort()
        columns = list(zip(*found, strict=True)) if found else [()] * (1 + len(VALUE_COLUMNS))
        values = {
            name: torch.tensor([nan_for(v) for v in column], dtype=torch.float64)
            for name, column in zip(VALUE_COLUMNS, columns[1:], strict=True)
        }
        return PerExampleResults(index=torch.tensor(columns[0], dtype=torch.long), **values)

    def add(
        self,
        measurement: Measurement,
        index: torch.Tensor,
        estimate: Estimate,
        seconds: float,
        device: torch.device | str,
        dtype: str,
    ) -> None:
        """Commit one batch's rows (``index [b]`` and its estimate) with its provenance, in one
        transaction; rows already stored are kept as they are."""
        if self._provenance is None:
            self._provenance = provenance(device, dtype)
        origin = {**self._provenance, "device": str(device), "dtype": dtype}
        values = [getattr(estimate, name).detach().cpu().tolist() for name in VALUE_COLUMNS]
        with self._guarded(), self._transaction():
            cursor = self._connection.execute(
                INSERT_BATCH,
                (
                    measurement.key,
                    len(index),
                    seconds,
                    origin["vaelik_version"],
                    origin["git_commit"],
                    origin["machine"],
                    origin["torch_version"],
                    origin["device"],
                    origin["dtype"],
                    now(),
                ),
            )
            batch = cursor.lastrowid
            self._connection.executemany(
                INSERT_ROW,
                [
                    (measurement.key, int(i), *(column[n] for column in values), batch)
                    for n, i in enumerate(index.tolist())
                ],
            )

    def merge(self, other: str | Path) -> int:
        """Copy every row of the store ``other`` that this one lacks, with its measurement and
        its batch's provenance (a union: rows already here are kept). Returns the rows added.
        A file merged once and unchanged since is not merged again."""
        snapshot = read_only_snapshot(Path(other))
        if snapshot is None:
            return 0
        store_id, measurements, batches, rows = snapshot
        last_batch = max((batch[0] for batch in batches), default=0)
        marker = f"merged:{store_id}:{last_batch}:{len(rows)}"
        with self._guarded():
            if self._connection.execute("SELECT 1 FROM meta WHERE key = ?", (marker,)).fetchone():
                return 0
        added = 0
        by_batch: dict[int, list[tuple]] = {}
        for row in rows:
            by_batch.setdefault(row[-1], []).append(row)
        with self._guarded(), self._transaction():
            connection = self._connection
            connection.executemany(INSERT_MEASUREMENT, measurements)
            for batch in batches:
                cursor = connection.execute(INSERT_BATCH, batch[1:])
                before = connection.total_changes
                connection.executemany(
                    INSERT_ROW,
                    [(*row[:-1], cursor.lastrowid) for row in by_batch.get(batch[0], [])],
                )
                if connection.total_changes == before:  # every row here already: no batch
                    connection.execute("DELETE FROM batches WHERE id = ?", (cursor.lastrowid,))
                added += connection.total_changes - before
            connection.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (marker, now()))
        return added

    def count(self, measurement: Measurement) -> int:
        """How many rows ``measurement`` has."""
        with self._guarded():
            (found,) = self._connection.execute(
                "SELECT COUNT(*) FROM rows WHERE measurement = ?", (measurement.key,)
            ).fetchone()
        return int(found)

    def batches(self, measurement: Measurement) -> list[dict[str, Any]]:
        """The provenance of every batch of ``measurement``, in the order written."""
        with self._guarded():
            cursor = self._connection.execute(
                "SELECT * FROM batches WHERE measurement = ? ORDER BY id", (measurement.key,)
            )
            names = [column[0] for column in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    @contextlib.contextmanager
    def _guarded(self) -> Iterator[None]:
        """SQLite's errors on this file as one-line StoreErrors naming it."""
        try:
            yield
        except sqlite3.Error as error:
            raise StoreError(self._unusable(error)) from None


def shard_path(store: str | Path, shard: tuple[int, int]) -> Path:
    """The store file of shard ``I`` of ``N`` beside ``store``: ``<stem>.shard-I-of-N<suffix>``
    (each shard writes a file of its own: no two writers share a lock, even over a network
    filesystem)."""
    path = Path(store)
    part, parts = shard
    return path.with_name(f"{path.stem}.shard-{part}-of-{parts}{path.suffix}")


def shard_files(store: str | Path) -> list[Path]:
    """The shard stores written beside ``store`` (:func:`shard_path`), in name order (not
    SQLite's ``-wal`` and ``-shm`` files beside them)."""
    path = Path(store)
    pattern = re.compile(re.escape(path.stem) + r"\.shard-\d+-of-\d+" + re.escape(path.suffix))
    return sorted(p for p in path.parent.glob(f"{path.stem}.shard-*") if pattern.fullmatch(p.name))


def read_only_snapshot(path: Path) -> tuple[str, list, list, list] | None:
    """``(store_id, measurements, batches, rows)`` of the store at ``path``, read in one read
    transaction of a read-only connection (a shard still writing is neither written to nor
    read half-way); None when it has no rows yet. A file that is not a store raises
    :class:`StoreError`."""
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=60)
    except sqlite3.Error as error:
        raise StoreError(f"shard store {path} cannot be read ({error})") from None
    try:
        connection.execute("BEGIN")
        tables = {n for (n,) in connection.execute("SELECT name FROM sqlite_master")}
        if not {"meta", "measurements", "batches", "rows"} <= tables:
            raise StoreError(f"{path} is not a vaelik results store: move it away from the store")
        found = connection.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()
        snapshot = (
            found[0] if found else str(path.resolve()),
            connection.execute("SELECT * FROM measurements").fetchall(),
            connection.execute("SELECT * FROM batches").fetchall(),
            connection.execute("SELECT * FROM rows").fetchall(),
        )
        connection.execute("COMMIT")
    except sqlite3.Error as error:
        raise StoreError(
            f"shard store {path} cannot be read ({error}): it is not a vaelik results store, or "
            "it is corrupt; move it away from the store"
        ) from None
    finally:
        connection.close()
    return snapshot if snapshot[3] else None


@contextlib.contextmanager
def opened(store: str | Path | ResultStore | None) -> Iterator[ResultStore | None]:
    """The store a call names: one it opens (and closes), one it was given, or None."""
    if store is None or isinstance(store, ResultStore):
        yield store
        return
    with ResultStore(store) as made:
        for shard in shard_files(store):  # what shards wrote beside it: merged by union
            made.merge(shard)
        yield made


@dataclass
class StoredRows:
    """A call's rows in a results store: those found (``rows``), and where new ones go."""

    store: ResultStore | None
    measurement: Measurement | None
    rows: PerExampleResults

    @classmethod
    def of(
        cls,
        store: ResultStore | None,
        model: Any,
        plan: Any,
        dataset: Any,
        indices: Sequence[int],
        split: str,
        device: torch.device | str = "cpu",
    ) -> StoredRows:
        """The rows ``store`` holds of ``plan`` on ``model`` for ``indices`` of ``dataset``
        (named ``split``); none without a store."""
        if store is None:
            return cls(None, None, PerExampleResults.concatenate([]))
        measurement = Measurement.of(model, plan, dataset, split, device)
        store.register(measurement)
        return cls(store, measurement, store.rows(measurement, indices))

    @property
    def found(self) -> bool:
        return bool(len(self.rows.index))

    def missing(self, indices: Sequence[int]) -> list[int]:
        """``indices`` without those found, in their order."""
        done = set(self.rows.index.tolist())
        return [i for i in indices if i not in done]

    def add(
        self,
        index: torch.Tensor,
        estimated: Estimate,
        seconds: float,
        device: torch.device,
        dtype: str,
    ) -> None:
        """Commit a batch's rows (nothing without a store)."""
        if self.store is not None and self.measurement is not None:
            self.store.add(self.measurement, index, estimated, seconds, device, dtype)

    def report(self) -> dict[str, Any]:
        """What a summary says of the store: its path, the measurement's key, the rows reused."""
        if self.store is None or self.measurement is None:
            return {}
        return {
            "store": str(self.store.path),
            "measurement": self.measurement.key,
            "reused": len(self.rows.index),
        }


def nan_for(value: float | None) -> float:
    """SQLite stores NaN as NULL: read it back as NaN."""
    return math.nan if value is None else value


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
