"""Read an offline W&B run back from its own files: the ``run-<id>.wandb`` log, which holds wandb's protobuf
``Record`` messages (``wandb.proto.wandb_internal_pb2``) in LevelDB log framing, and the media files beside it.
"""

from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

HEADER = 7  # b":W&B", magic 0xBEE1 (uint16), version (uint8)
BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path):
    """Yield every ``Record`` in a ``.wandb`` file."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B log"
    pos, pending = HEADER, b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # block trailer
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pos += 7
        if kind == 0:  # zero padding to the end of the block
            pos += left - 7
            continue
        chunk, pos = data[pos : pos + length], pos + length
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(pending)
            yield record


@dataclass
class OfflineRun:
    dir: Path
    run_id: str = ""
    config: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    exit_code: int | None = None

    def values(self, key: str) -> list:
        return [row[key] for row in self.history if key in row]


def read_offline_run(run_dir: Path, timeout: float = 20.0) -> OfflineRun:
    """Config, history rows and exit code of one ``offline-run-*`` folder.

    wandb-core writes the log in the background and ``wandb.finish()`` can return before the last records reach
    the file, so this waits (up to ``timeout`` s) for the exit record.
    """
    deadline = time.monotonic() + timeout
    while True:
        run = _read_offline_run(run_dir)
        if run.exit_code is not None or time.monotonic() > deadline:
            return run
        time.sleep(0.2)


def _read_offline_run(run_dir: Path) -> OfflineRun:
    (log_file,) = Path(run_dir).glob("run-*.wandb")
    run = OfflineRun(Path(run_dir))
    for record in records(log_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.run_id = record.run.run_id
            for item in record.run.config.update:
                run.config[item.key] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                run.config[item.key] = json.loads(item.value_json)
        elif kind == "history":
            row = {}
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                row[key] = json.loads(item.value_json)
            run.history.append(row)
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    return run


def offline_runs(save_dir: Path) -> list[OfflineRun]:
    return [read_offline_run(d) for d in sorted((Path(save_dir) / "wandb").glob("offline-run-*"))]
