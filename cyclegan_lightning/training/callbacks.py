"""Callbacks of a training run: sample grids, training curves, a checkpoint on SIGTERM or a SLURM requeue signal,
per-rank seeds."""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.utilities.exceptions import SIGTERMException
from PIL import Image, ImageDraw, ImageFont
from torchvision.transforms.v2.functional import pil_to_tensor, to_pil_image
from torchvision.utils import make_grid

from cyclegan_lightning.checkpoints.atomic import save_png_atomic
from cyclegan_lightning.directions import DIRECTIONS, ENDPOINTS, REVERSE
from cyclegan_lightning.errors import ConfigError
from cyclegan_lightning.image_range import to_unit
from cyclegan_lightning.training import slurm

log = logging.getLogger(__name__)


def to_display(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images (1 or 3 channels) -> float32 RGB in [0, 1], the range loggers and PNG writers expect."""
    images = to_unit(images)
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


ROW_NAMES = ("real A", "A->B", "A->B->A", "real B", "B->A", "B->A->B")  # the grid's rows, top to bottom


def _font(size: int) -> ImageFont.ImageFont:
    """Pillow's bundled font (nothing to download); scalable from Pillow 10.1, a fixed bitmap before."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def label_grid(grid: torch.Tensor, title: str, row_names: tuple[str, ...] = ROW_NAMES, pad: int = 2) -> torch.Tensor:
    """Add a title line above and a name left of each row of a ``make_grid`` image (float (3, H, W) in [0, 1])."""
    height = grid.shape[1]
    row_h = (height - pad) / len(row_names)
    font = _font(max(10, min(18, int(row_h) // 6)))
    text_w = max(int(font.getlength(name)) for name in row_names) + 12
    title_h = int(font.getbbox(title)[3]) + 10
    canvas = Image.new("RGB", (text_w + grid.shape[2], title_h + height), "white")
    canvas.paste(to_pil_image(grid), (text_w, title_h))
    draw = ImageDraw.Draw(canvas)
    draw.text((text_w + pad, 5), title, fill="black", font=font)
    for i, name in enumerate(row_names):
        draw.text((6, title_h + pad + (i + 0.5) * row_h), name, fill="black", font=font, anchor="lm")
    return pil_to_tensor(canvas).float() / 255


class SampleGrid(Callback):
    """Translate the same ``n_images`` validation images of each domain at every validation.

    Rows: real A, A->B, A->B->A, real B, B->A, B->A->B (named in the picture; a one-way model such as CUT: real A,
    A->B); one column per image; the epoch
    above. Tiles smaller than ``display_size`` are enlarged by a whole factor with nearest-neighbour (for display
    only: every model pixel stays a sharp square, so checkerboards remain visible). The grid is written to
    ``dirpath/epoch_XXXX.png`` (and ``latest.png``) and sent to every logger that takes images. The images are
    chosen once, so grids are comparable across epochs and across runs on the same data.
    """

    def __init__(self, dirpath: str, n_images: int = 4, every_n_epochs: int = 1, display_size: int = 128):
        self.dirpath = Path(dirpath)
        self.n_images, self.every_n_epochs = n_images, every_n_epochs
        self.display_size = display_size  # tiles are enlarged to at least this side (0: as they are)
        self.inputs: dict[str, torch.Tensor] | None = None

    def _fixed_inputs(self, trainer: Trainer) -> dict[str, torch.Tensor]:
        if self.inputs is None:
            sets = trainer.datamodule.val_sets
            self.inputs = {
                d: torch.stack([sets[d][i]["image"] for i in range(min(self.n_images, len(sets[d])))]) for d in "ab"
            }
        return self.inputs

    @torch.no_grad()
    def render(self, trainer: Trainer, pl_module: LightningModule) -> torch.Tensor:
        """The labelled grid (rows named, the epoch above) as a float (3, H, W) tensor in [0, 1]."""
        rows, names = [], []
        directions = tuple(getattr(pl_module, "generators", None) or DIRECTIONS)  # CUT: a2b only, no round trip
        for there in directions:
            back, (src, dst) = REVERSE[there], ENDPOINTS[there]
            real = self._fixed_inputs(trainer)[src].to(pl_module.device)
            fake = pl_module(real, there)
            rows += [to_display(real), to_display(fake)]
            names += [f"real {src.upper()}", f"{src.upper()}->{dst.upper()}"]
            if back in directions:
                rows.append(to_display(pl_module(fake, back)))
                names.append(f"{src.upper()}->{dst.upper()}->{src.upper()}")
        n = max(r.shape[0] for r in rows)
        rows = [torch.cat([r, r.new_ones(n - r.shape[0], *r.shape[1:])]) if r.shape[0] < n else r for r in rows]
        tiles = torch.cat(rows).cpu()
        scale = -(-self.display_size // min(tiles.shape[-2:])) if self.display_size else 1  # ceil
        if scale > 1:
            tiles = F.interpolate(tiles, scale_factor=scale, mode="nearest")
        grid = make_grid(tiles, nrow=n, padding=2, pad_value=1.0)
        return label_grid(grid, f"epoch {trainer.current_epoch + 1}", tuple(names))

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        grid = self.render(trainer, pl_module)  # every rank renders (safe with synced batch norm); rank 0 writes
        if not trainer.is_global_zero:
            return
        epoch = trainer.current_epoch + 1
        path = self.dirpath / f"epoch_{epoch:04d}.png"
        try:
            save_png_atomic(grid, path)
            save_png_atomic(grid, self.dirpath / "latest.png")
        except OSError as exc:  # disk full, permissions: samples are not worth a multi-day run; say so and go on
            log.error(
                "could not write the sample grid %s (%s); earlier grids are intact. Training goes on; the next "
                "checkpoint write will stop it if the disk is really full.",
                path,
                exc.strerror or exc,
            )
            return
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):  # W&B
                # uint8 HWC, rounded as save_image does: wandb.Image leaves float arrays unscaled (0..1 of 255)
                rgb = grid.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
                logger.log_image(key="samples", images=[rgb])
            elif hasattr(getattr(logger, "experiment", None), "add_image"):  # TensorBoard
                logger.experiment.add_image("samples", grid, global_step=epoch)
        log.info("sample grid: %s", path)


class PlotCurves(Callback):
    """At the end of training, draw the run's CSV log into ``dirpath/curves.png`` (``plotting.plot_metrics``).

    Does nothing without a CSVLogger (``logger=csv``, the default); ``python plot.py run=<run>`` draws it any time.
    """

    def __init__(self, dirpath: str):
        self.dirpath = Path(dirpath)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        from lightning.pytorch.loggers import CSVLogger

        from cyclegan_lightning.evaluation.plotting import plot_metrics

        if not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            if isinstance(logger, CSVLogger):
                logger.save()  # flush the rows still buffered
                try:
                    path = plot_metrics(Path(logger.log_dir) / "metrics.csv", self.dirpath / "curves.png")
                except Exception as exc:  # noqa: BLE001 -- a plot is not worth failing a finished run
                    log.warning("could not draw the training curves (%s); try python plot.py run=<run>", exc)
                    return
                log.info("training curves: %s", path)
                return


class CheckpointOnSignal(Callback):
    """Pre-emption and time limits: save ``dirpath/filename`` after the current batch, end the run cleanly, and under
    SLURM requeue the job when the signal was a requeue signal, so ``ckpt_path=auto`` continues from the next batch.

    - SIGTERM (what schedulers send before pre-emption or ``scancel``): Lightning turns it into a
      ``SIGTERMException`` at the end of the current batch, on every rank; the checkpoint is written then.
    - ``requeue_signals`` (``sbatch --signal=USR1@120``; submitit's launcher sends USR2 by default), only inside a
      SLURM job (``SLURM_JOB_ID`` set): the handler only records the signal. At the end of the training batch
      it arrived in (or of the next one, if it came after this hook ran; after validation, if it came during
      validation) the run stops exactly as on SIGTERM, and ``requeue_if_asked`` runs ``scontrol requeue <job>``
      once, from global rank 0, when the run has torn down. Under DDP the ranks decide together (one all-reduce
      of a flag per batch), so a signal that reaches them at different moments still stops all after the same
      batch. A signal after the last training batch changes nothing: the run is finishing.

    Why not Lightning's ``SLURMEnvironment(auto_requeue=True)`` handler: it saves ``hpc_ckpt_<n>.ckpt`` *inside* the
    signal handler, i.e. anywhere in a training step (between the generator and discriminator updates), so the
    resume is not exact and under DDP its collectives can meet another rank's all-reduce; it requeues at once (SLURM
    then kills the job, the save may be cut short); and it is not installed when another handler owns the signal,
    as submitit's does. This handler is installed in ``setup``, before Lightning registers its own, so Lightning
    sees the signal taken and leaves it alone (submitit's handler is put back at the end). Lightning's
    ``OnExceptionCheckpoint`` does not fit either: it saves on every exception (a crash would write over
    ``last.ckpt``) and deletes its file at ``teardown``.
    """

    def __init__(
        self,
        dirpath: str,
        filename: str = "last.ckpt",  # the resume checkpoint: the same file the end-of-epoch checkpoint writes
        requeue_signals: Sequence[str] = ("SIGUSR1", "SIGUSR2"),  # under SLURM: save, requeue, exit
    ):
        self.path = Path(dirpath) / filename
        self.requeue_signals = [s for s in map(_signal_named, requeue_signals) if s is not None]
        self.received: signal.Signals | None = None  # the requeue signal this process got, if any
        self.requeue_requested = False  # a checkpoint was saved for a requeue: rank 0 runs scontrol at the end
        self._stopping = False  # a requeue signal is stopping the run (on every rank)
        self._trainer: Trainer | None = None
        self._previous: dict[signal.Signals, object] = {}

    # ---- the signal ------------------------------------------------------------------------------------------
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._restore_handlers()  # a previous fit in this process that ended on an exception
        self.received, self.requeue_requested, self._stopping = None, False, False
        if stage != "fit" or slurm.job_id() is None or threading.current_thread() is not threading.main_thread():
            return
        self._trainer = trainer
        for signum in self.requeue_signals:
            self._previous[signum] = signal.signal(signum, self._on_requeue_signal)
        names = "/".join(s.name for s in self.requeue_signals)
        log.info("SLURM job %s: %s saves a checkpoint after the current batch and requeues", slurm.job_id(), names)

    def _on_requeue_signal(self, signum: int, frame: object) -> None:
        """Only record it: saving here would catch the training step half done (and, under DDP, the ranks at
        different points)."""
        self.received = signal.Signals(signum)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx) -> None:
        if self._trainer is None or self._stopping:
            return
        received = self.received is not None
        if trainer.world_size > 1:  # stop together: if any rank got the signal, every rank stops after this batch
            received = trainer.strategy.reduce_boolean_decision(received, all=False)
        if received:
            self._stop(trainer)

    def _stop(self, trainer: Trainer) -> None:
        """Stop as on SIGTERM: Lightning raises ``SIGTERMException`` after this batch's bookkeeping, so the
        checkpoint records the batch as done and the resumed run starts with the next one."""
        self._stopping = True
        trainer._signal_connector.received_sigterm = True  # noqa: SLF001 -- Lightning's own stop flag

    def _restore_handlers(self) -> None:
        """Put back the handlers ours replaced, where ours is still installed. Lightning, which saw ours when it
        registered its own, reinstalls it in its teardown: hence ``teardown`` and ``requeue_if_asked`` do this,
        not ``on_exception``."""
        for signum, handler in self._previous.items():
            if signal.getsignal(signum) == self._on_requeue_signal:
                signal.signal(signum, handler)
        self._previous, self._trainer = {}, None

    # ---- the checkpoint ----------------------------------------------------------------------------------------
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException):
            return
        trainer.save_checkpoint(self.path, weights_only=False)  # every rank: the per-rank state is gathered to rank 0
        why = "SIGTERM"
        if self._stopping:  # a requeue signal, here or (under DDP) on another rank
            why = self.received.name if self.received else "a requeue signal to another rank"
        if self._stopping and trainer.is_global_zero:
            self.requeue_requested = not _training_finished(trainer)
        if trainer.is_global_zero:
            log.warning(
                "%s: saved %s at epoch %d, step %d; %s",
                why,
                self.path,
                trainer.current_epoch,
                trainer.global_step,
                "requeueing the SLURM job" if self.requeue_requested else "continue with ckpt_path=auto",
            )

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._restore_handlers()

    def requeue_if_asked(self) -> bool:
        """Run ``scontrol requeue`` once if a requeue signal stopped this run (global rank 0 only), and put the
        previous signal handlers back. ``run.py`` calls it last, since SLURM ends the job as soon as it requeues it."""
        self._restore_handlers()
        if not self.requeue_requested:
            return False
        self.requeue_requested = False
        return slurm.requeue(slurm.job_id())


def _signal_named(name: str) -> signal.Signals | None:
    """``"SIGUSR1"`` -> ``signal.SIGUSR1``; None for a POSIX signal this platform lacks (Windows has no SLURM)."""
    if name in signal.Signals.__members__:
        return signal.Signals[name]
    if os.name == "nt" and name in ("SIGUSR1", "SIGUSR2"):
        return None
    raise ConfigError(
        f"callbacks.checkpoint_on_signal.requeue_signals: {name!r} is not a signal name here; use names such as "
        "SIGUSR1, SIGUSR2."
    )


def _training_finished(trainer: Trainer) -> bool:
    """Whether the fit loop had reached ``max_epochs`` / ``max_steps`` (a requeue would only reload the end)."""
    epochs_done = (
        trainer.max_epochs is not None and trainer.max_epochs >= 0 and trainer.current_epoch >= trainer.max_epochs
    )
    steps_done = trainer.max_steps is not None and trainer.max_steps >= 0 and trainer.global_step >= trainer.max_steps
    return epochs_done or steps_done


class DistinctRankSeeds(Callback):
    """Under DDP, reseed rank ``r`` with ``seed + r`` once the processes exist (``setup``).

    ``seed_everything`` gives every rank the same seed, which is right for building identical networks, but the
    networks' own random draws (dropout) should differ between ranks (the data's already do: ``SeededSampler``).
    Single-process runs are left untouched; a resumed run restores each rank's saved states afterwards.
    """

    def __init__(self, seed: int):
        self.seed = seed

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if trainer.world_size > 1:  # not seed_everything: PL_GLOBAL_SEED must stay equal on all ranks, since
            seed = self.seed + trainer.global_rank  # the DistributedSampler's shared shuffle is seeded from it
            random.seed(seed)
            np.random.seed(seed % 2**32)
            torch.manual_seed(seed)
