"""A stopped training run keeps its work and says how to go on: SIGTERM and Ctrl-C during ``fit``.

Lightning ends a fit on SIGTERM after the running batch by raising ``SIGTERMException`` (a ``SystemExit``
without a code, so the process would exit 0 as if all went well), and on Ctrl-C (``KeyboardInterrupt``) exits with
status 1; neither saves anything. :class:`InterruptionCheckpoint`, added to every model of this package, hooks
Lightning's ``on_exception`` for those two and

- saves ``<checkpoint folder>/interrupted.ckpt``: the weights, optimiser and loop state of the last completed
  optimiser step (the same full checkpoint a resumed ``fit`` takes), or says that no step completed yet;
- prints the exact command that resumes the run (``anomalib train … --ckpt_path …interrupted.ckpt`` in the CLI,
  ``engine.fit(…, ckpt_path=…)`` elsewhere);
- makes a SIGTERM exit with status 143 (128 + SIGTERM, what a shell reports for a terminated process), so job
  schedulers and scripts see that the run did not finish; Ctrl-C keeps Lightning's status 1.
"""

from __future__ import annotations

import shlex
import signal
import sys
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

SIGTERM_EXIT_CODE = 128 + int(signal.SIGTERM)
FILENAME = "interrupted.ckpt"


def resume_command(checkpoint: Path, argv: list[str] | None = None) -> str:
    """The command that continues this run from ``checkpoint``.

    In anomalib's CLI: the same command line with ``--ckpt_path`` set to the checkpoint (any earlier one dropped).
    """
    from anomalib_repair.cli_support import in_anomalib_cli

    if not in_anomalib_cli():
        return f"engine.fit(model=..., datamodule=..., ckpt_path={str(checkpoint)!r})"
    args = list(sys.argv[1:] if argv is None else argv)
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg == "--ckpt_path":
            skip = True
            continue
        if arg.startswith("--ckpt_path="):
            continue
        kept.append(arg)
    return shlex.join(["anomalib", *kept, "--ckpt_path", str(checkpoint)])


class InterruptionCheckpoint(Callback):
    """On SIGTERM or Ctrl-C during ``fit``: save ``interrupted.ckpt``, print the resume command, exit non-zero."""

    def checkpoint_path(self, trainer: Trainer) -> Path:
        """Beside the run's other checkpoints (``<run>/weights/lightning``), else in ``default_root_dir``."""
        callback = trainer.checkpoint_callback
        folder = getattr(callback, "dirpath", None) if callback is not None else None
        if not folder:
            folder = str(Path(trainer.default_root_dir) / "weights" / "lightning")
        return Path(folder) / FILENAME

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """Keep the last completed step of an interrupted fit and say how to resume it."""
        del pl_module
        if not isinstance(exception, SIGTERMException | KeyboardInterrupt) or trainer.state.fn != TrainerFn.FITTING:
            return
        what = "SIGTERM" if isinstance(exception, SIGTERMException) else "Ctrl-C"
        if isinstance(exception, SIGTERMException):
            exception.code = SIGTERM_EXIT_CODE
        step, epoch = trainer.global_step, trainer.current_epoch
        if step == 0:
            message = f"Training stopped by {what} before its first optimiser step: nothing to keep or resume."
        else:
            path = self.checkpoint_path(trainer)
            path.parent.mkdir(parents=True, exist_ok=True)
            trainer.save_checkpoint(path)
            message = (
                f"Training stopped by {what} at step {step} (epoch {epoch}); its state is saved in {path}.\n"
                f"  resume: {resume_command(path)}"
            )
        if trainer.is_global_zero:
            print(f"\n{message}", file=sys.stderr)  # noqa: T201
