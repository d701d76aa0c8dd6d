"""Read an offline wandb run's ``.wandb`` file: a LevelDB-style log of protobuf records (a
7-byte file header, then 32 KiB blocks of records, each with a 7-byte header: crc32, length,
type FULL / FIRST / MIDDLE / LAST). Test helper: wandb no longer ships a Python reader."""

from __future__ import annotations

import struct
import time
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path) -> list[wandb_internal_pb2.Record]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a wandb run file"
    records, pending, offset = [], b"", HEADER
    while offset + HEADER <= len(data):
        left_in_block = BLOCK - offset % BLOCK
        if left_in_block < HEADER:  # block trailer padding
            offset += left_in_block
            continue
        _, length, kind = struct.unpack("<IHB", data[offset : offset + HEADER])
        payload = data[offset + HEADER : offset + HEADER + length]
        offset += HEADER + length
        if kind == 0 and length == 0:
            break
        if kind in (FULL, FIRST):
            pending = payload
        else:
            pending += payload
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def summarize(path: Path) -> dict:
    """History keys, config keys (from config records and from the run record), run name and
    group, exit code of an offline run file."""
    history, config, run, exit_code = set(), set(), None, None
    for record in read_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.update(item.key or "/".join(item.nested_key) for item in record.history.item)
        elif kind == "config":
            config.update(item.key or "/".join(item.nested_key) for item in record.config.update)
        elif kind == "run":
            run = {"name": record.run.display_name, "group": record.run.run_group}
            # config set before the run record was sent travels inside it, not as its own record
            config.update(
                item.key or "/".join(item.nested_key) for item in record.run.config.update
            )
        elif kind == "exit":
            exit_code = record.exit.exit_code
    return {"history": history, "config": config, "run": run, "exit_code": exit_code}


def summarize_finished(path: Path, timeout_s: float = 30.0) -> dict:
    """:func:`summarize` once the run file holds its exit record: wandb's writer may still be
    flushing the file for a moment after ``finish()`` returns on a loaded machine."""
    deadline = time.monotonic() + timeout_s
    written = summarize(path)
    while written["exit_code"] is None and time.monotonic() < deadline:
        time.sleep(0.5)
        written = summarize(path)
    return written
