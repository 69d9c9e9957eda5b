"""What an interrupted fit keeps and says, at step 0 and later (the CLI test sends a real SIGTERM mid-training)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from anomalib_repair.interruptions import SIGTERM_EXIT_CODE, InterruptionCheckpoint, resume_command


def _trainer(tmp_path: Path, step: int) -> SimpleNamespace:
    saved: list[Path] = []
    return SimpleNamespace(
        state=SimpleNamespace(fn=TrainerFn.FITTING),
        global_step=step,
        current_epoch=step // 10,
        checkpoint_callback=SimpleNamespace(dirpath=str(tmp_path / "weights" / "lightning")),
        default_root_dir=str(tmp_path),
        is_global_zero=True,
        save_checkpoint=lambda path: (saved.append(Path(path)), Path(path).write_text("state")),
        saved=saved,
    )


@pytest.mark.parametrize("exception", [KeyboardInterrupt(), SIGTERMException()], ids=["ctrl-c", "sigterm"])
def test_before_the_first_step_nothing_is_saved_and_the_user_is_told(tmp_path, capsys, exception) -> None:
    trainer = _trainer(tmp_path, step=0)
    InterruptionCheckpoint().on_exception(trainer, None, exception)  # type: ignore[arg-type]
    said = capsys.readouterr().err
    assert "before its first optimiser step: nothing to keep or resume" in said
    assert trainer.saved == [] and not (tmp_path / "weights").exists()


def test_after_some_steps_the_state_is_saved_and_the_resume_command_printed(tmp_path, capsys, monkeypatch) -> None:
    trainer = _trainer(tmp_path, step=12)
    exception = SIGTERMException()
    InterruptionCheckpoint().on_exception(trainer, None, exception)  # type: ignore[arg-type]
    path = tmp_path / "weights" / "lightning" / "interrupted.ckpt"
    assert trainer.saved == [path] and path.exists()
    said = capsys.readouterr().err
    assert f"by SIGTERM at step 12 (epoch 1); its state is saved in {path}" in said
    assert f"resume: {resume_command(path)}" in said
    assert resume_command(path) == f"engine.fit(model=..., datamodule=..., ckpt_path={str(path)!r})"  # not the CLI
    cli = ["fit", "--model", "anomalib_repair.CRAS", "--ckpt_path", "old.ckpt", "--trainer.max_epochs", "3"]
    monkeypatch.setattr("anomalib_repair.cli_support.in_anomalib_cli", lambda: True)
    # in anomalib's CLI: the same command line, its old checkpoint replaced by the new one
    assert (
        resume_command(path, cli)
        == f"anomalib fit --model anomalib_repair.CRAS --trainer.max_epochs 3 --ckpt_path {path}"
    )
    assert exception.code == SIGTERM_EXIT_CODE  # the process exits non-zero


def test_other_exceptions_and_other_stages_are_left_alone(tmp_path, capsys) -> None:
    trainer = _trainer(tmp_path, step=5)
    InterruptionCheckpoint().on_exception(trainer, None, ValueError("bad"))  # type: ignore[arg-type]
    trainer.state.fn = TrainerFn.TESTING
    InterruptionCheckpoint().on_exception(trainer, None, KeyboardInterrupt())  # type: ignore[arg-type]
    assert trainer.saved == [] and capsys.readouterr().err == ""
