"""AtomicCheckpointIO: a checkpoint file is either the old complete one or the new complete one, never a torso."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from anomalib_repair import callbacks
from anomalib_repair.callbacks import AtomicCheckpointIO


class _Killed(BaseException):
    """Stands for the process dying in the middle of a write (not an ``Exception``: nothing may swallow it)."""


def test_save_then_load_round_trip(tmp_path: Path) -> None:
    io = AtomicCheckpointIO()
    target = tmp_path / "nested" / "last.ckpt"
    io.save_checkpoint({"global_step": 3, "weights": torch.arange(4.0)}, target)
    loaded = io.load_checkpoint(target)
    assert loaded["global_step"] == 3
    torch.testing.assert_close(loaded["weights"], torch.arange(4.0))
    assert sorted(path.name for path in target.parent.iterdir()) == ["last.ckpt"]


def test_a_write_that_dies_halfway_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch) -> None:
    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1}, target)
    before = target.read_bytes()

    real_save = torch.save

    def dies_halfway(obj: object, file: object, *args: object, **kwargs: object) -> None:
        real_save(obj, file, *args, **kwargs)
        file.truncate(10)  # type: ignore[attr-defined]  # half a file on disk ...
        raise _Killed  # ... and the process gone before the rename

    monkeypatch.setattr(callbacks.torch, "save", dies_halfway)
    with pytest.raises(_Killed):
        io.save_checkpoint({"global_step": 2}, target)
    assert target.read_bytes() == before  # the old checkpoint, complete
    assert io.load_checkpoint(target)["global_step"] == 1
    assert [path.name for path in tmp_path.iterdir()] == ["last.ckpt"], "no temporary file left behind"
