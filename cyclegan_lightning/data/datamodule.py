"""LightningDataModule for two folders (or two lists of folders) of unpaired images."""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import multiprocessing.util  # registers its exit handler now, so that ours (registered below) runs before it
import os
import signal
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader

from cyclegan_lightning.data.datasets import (
    SeededSampler,
    SingleDomainDataset,
    UnpairedImageDataset,
)
from cyclegan_lightning.data.images import (
    IMG_EXTENSIONS,
    ImageLoadError,
    check_bad_image_policy,
    find_images,
    image_size,
)
from cyclegan_lightning.data.transforms import build_transform
from cyclegan_lightning.downloads.datasets import fetch_hint
from cyclegan_lightning.errors import DataError

log = logging.getLogger(__name__)

Folders = str | Sequence[str] | None
N_VAL_FALLBACK = 8  # validation images taken from the training folders when there are no test folders
CHECK_MODES = ("header", "full", "none")


def _ignore_sigterm(worker_id: int) -> None:
    """Workers leave SIGTERM to the main process: a scheduler that signals the whole job (SLURM does) must not
    kill them before the main process has saved its pre-emption checkpoint; they exit when it does."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _ignores_sigterm(pid: int) -> bool:
    """Whether process ``pid`` ignores SIGTERM (Linux: the SigIgn mask in /proc; elsewhere: assume not)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            mask = next(line for line in status if line.startswith("SigIgn:")).split()[1]
    except (OSError, StopIteration):
        return False
    return bool(int(mask, 16) >> (signal.SIGTERM - 1) & 1)


@atexit.register  # registered after multiprocessing's exit handler (imported above), so it runs before it
def _kill_leftover_workers() -> None:
    """At interpreter exit, multiprocessing ends daemonic children with SIGTERM and then joins them; our workers
    ignore SIGTERM, so a loader never shut down (persistent workers still referenced at exit) would hang the exit.
    Such workers hold nothing worth keeping: end them with SIGKILL first."""
    stuck = [c for c in multiprocessing.active_children() if c.daemon and c.pid and _ignores_sigterm(c.pid)]
    if not stuck:
        return
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # torch's handler would raise "worker killed" mid-exit
    for child in stuck:
        os.kill(child.pid, signal.SIGKILL)
    for child in stuck:
        child.join(timeout=5)


def _as_list(folders: Folders) -> list[Path]:
    if folders is None:
        return []
    if isinstance(folders, (str, Path)):
        return [Path(folders)]
    return [Path(f) for f in folders]


class UnpairedDataModule(LightningDataModule):
    """Unpaired A/B images under ``root/{trainA,trainB,testA,testB}`` or explicit lists of folders per domain.

    Before training starts, every file's header is read (``check_images="header"``; ``"full"`` decodes every
    file, ``"none"`` skips the check), so a missing folder, an empty folder or a file that is not an image stops
    the run at once with its name; with ``on_bad_image="skip"`` bad files are dropped with a warning instead.
    A file that turns out corrupt only when decoded mid-epoch follows the same policy: ``skip`` logs a warning,
    takes the next file and counts it (logged as ``data/skipped_images``); ``fail`` stops with the file's name.

    Training data is a pure function of ``seed``, the epoch and the rank (:class:`SeededSampler`): the same for
    any number of workers. ``state_dict`` (saved in every checkpoint) holds the seed and the position in the
    epoch, so a resumed run, even one stopped mid-epoch, continues with the next batch it would have drawn.
    """

    def __init__(
        self,
        root: str | None = None,  # folder with trainA/ trainB/ testA/ testB/
        train_a: Folders = None,  # explicit folder(s) of domain A for training; overrides root/trainA
        train_b: Folders = None,
        test_a: Folders = None,  # validation folders; default root/testA, else a few training images
        test_b: Folders = None,
        direction: str = "AtoB",  # BtoA: the model's domain A (its source) is read from the B folders
        channels_a: int = 3,  # channels of the model's domain A, the source (1 = grayscale, 3 = RGB)
        channels_b: int = 3,  # channels of the model's domain B, the target
        preprocess: str = "resize_and_crop",  # resize_and_crop | crop | scale_width | scale_width_and_crop | none
        load_size: int = 286,  # resize to this before cropping
        crop_size: int = 256,  # training crop
        flip: bool = True,  # random horizontal flips
        serial_batches: bool = False,  # B by index instead of at random
        max_dataset_size: int | None = None,  # use at most this many images per domain
        batch_size: int = 1,  # per device
        num_workers: int = 4,
        pin_memory: bool = True,  # page-locked batches for faster host-to-GPU copies; ignored without CUDA
        persistent_workers: bool = True,
        on_bad_image: str = "skip",  # skip | fail: what an unreadable image does (before and during training)
        check_images: str = "header",  # header | full | none: pre-flight check of every file
        build_demo: bool = False,  # build the bundled demo dataset at root if it is missing
        demo_task: str = "dusk",  # which demo build_demo builds: dusk (colour) | cel (texture) | gray2colour
        seed: int | None = None,  # data order and each sample's draws (B, crop, flip); None: a random one
    ):
        super().__init__()
        self.save_hyperparameters(logger=False)
        if direction not in ("AtoB", "BtoA"):
            raise DataError(f"data.direction must be AtoB or BtoA, got {direction!r}")
        check_bad_image_policy(on_bad_image, "data.on_bad_image")
        if check_images not in CHECK_MODES:
            raise DataError(f"data.check_images must be one of {CHECK_MODES}, got {check_images!r}")
        if root is None and not (train_a and train_b):
            raise DataError("set data.root (a folder with trainA/ and trainB/) or both data.train_a and data.train_b")
        self.channels = {"a": channels_a, "b": channels_b}
        self.train_set: UnpairedImageDataset | None = None
        self.val_sets: dict[str, SingleDomainDataset] = {}
        self.seed = seed
        self._resume = (0, 0)  # (epoch, samples of it already trained on) from a checkpoint

    # ---- folders -----------------------------------------------------------------------------------------------
    def _folders(self, split: str, domain: str) -> list[Path]:
        explicit = _as_list(self.hparams[f"{split}_{domain}"])
        if explicit:
            return explicit
        return [Path(self.hparams.root) / f"{split}{domain.upper()}"] if self.hparams.root else []

    def _list(self, folders: list[Path], what: str, required: bool) -> list[Path]:
        files: list[Path] = []
        for folder in folders:
            if not folder.is_dir():
                if not required:
                    continue
                hint = fetch_hint(folder) or (
                    "Put your images there, point data.root at a folder holding trainA/ trainB/ testA/ testB/, "
                    "or run `python -m cyclegan_lightning.data.demo` and use experiment=demo"
                )
                raise DataError(f"{what} folder {folder} does not exist. {hint}.")
            try:
                files += find_images(folder)
            except OSError as exc:  # the folder itself cannot be listed (permissions, a vanished mount)
                raise DataError(f"{what} folder {folder} cannot be read: {exc.strerror or exc}.") from None
        if required and not files:
            raise DataError(
                f"{what} folder(s) {', '.join(map(str, folders))} hold no images "
                f"(looked recursively for {', '.join(IMG_EXTENSIONS)})."
            )
        limit = self.hparams.max_dataset_size
        return files[:limit] if limit else files

    def _check(self, files: list[Path], what: str) -> list[Path]:
        """Pre-flight check of every file; drops or reports bad ones according to ``on_bad_image``."""
        mode = self.hparams.check_images
        if mode == "none":
            return files
        from cyclegan_lightning.data.images import load_image

        good, bad, small = [], [], 0
        min_side = self.hparams.crop_size if self.hparams.preprocess in ("crop", "scale_width_and_crop") else 0
        for path in files:
            try:
                w, h = image_size(path)
                if mode == "full":
                    load_image(path)
            except ImageLoadError as exc:
                bad.append(exc)
                continue
            small += min(w, h) < min_side
            good.append(path)
        if small:
            log.warning("%s: %d image(s) smaller than crop_size %d will be upscaled", what, small, min_side)
        if bad:
            listing = "\n  ".join(str(e) for e in bad[:10]) + ("\n  ..." if len(bad) > 10 else "")
            if self.hparams.on_bad_image == "fail":
                raise DataError(
                    f"{len(bad)} unreadable image(s) in {what} (data.on_bad_image=fail):\n  {listing}\n"
                    "Remove or fix them, or set data.on_bad_image=skip to train without them."
                )
            log.warning("%s: skipping %d unreadable image(s):\n  %s", what, len(bad), listing)
        if not good:
            raise DataError(f"{what}: none of its {len(files)} file(s) can be read as an image.")
        return good

    # ---- Lightning hooks ---------------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        root = self.hparams.root
        if self.hparams.build_demo and root and not (Path(root) / "trainA").is_dir():
            from cyclegan_lightning.data.demo import build_demo_dataset

            build_demo_dataset(root, task=self.hparams.demo_task)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        hp = self.hparams
        src, dst = ("b", "a") if hp.direction == "BtoA" else ("a", "b")  # model domain a <- folder src
        files = {}
        for model_domain, folder_domain in (("a", src), ("b", dst)):
            name = f"train{folder_domain.upper()}"
            files[model_domain] = self._check(self._list(self._folders("train", folder_domain), name, True), name)

        def transform(domain: str, train: bool):
            return build_transform(hp.preprocess, hp.load_size, hp.crop_size, hp.flip, self.channels[domain], train)

        self.train_set = UnpairedImageDataset(
            files["a"],
            files["b"],
            transform("a", True),
            transform("b", True),
            self.channels["a"],
            self.channels["b"],
            hp.serial_batches,
            hp.on_bad_image,
        )
        for model_domain, folder_domain in (("a", src), ("b", dst)):
            name = f"test{folder_domain.upper()}"
            val_files = self._list(self._folders("test", folder_domain), name, False)
            if val_files:
                val_files = self._check(val_files, name)
            else:
                log.warning("no %s folder: validating on the first %d training images", name, N_VAL_FALLBACK)
                val_files = files[model_domain][:N_VAL_FALLBACK]
            self.val_sets[model_domain] = SingleDomainDataset(
                val_files, transform(model_domain, False), self.channels[model_domain], hp.on_bad_image
            )
        log.info(
            "data: %d A / %d B training images (%d per epoch), %d A / %d B validation images",
            len(files["a"]),
            len(files["b"]),
            len(self.train_set),
            len(self.val_sets["a"]),
            len(self.val_sets["b"]),
        )

    def _loader(self, dataset, sampler=None) -> DataLoader:
        workers = self.hparams.num_workers
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            sampler=sampler,
            num_workers=workers,
            pin_memory=self.hparams.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.hparams.persistent_workers and workers > 0,
            worker_init_fn=_ignore_sigterm if workers > 0 else None,
            generator=torch.Generator().manual_seed(0),  # the workers' seeds: never drawn from the global RNG,
        )  # whose use in training must not depend on how many loaders or workers there are

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def train_dataloader(self) -> DataLoader:
        """Shuffled unless ``serial_batches`` (as the reference): :class:`SeededSampler`, each rank its share."""
        if self.seed is None:  # one random seed, the same on every rank (their shares must not overlap)
            self.seed = int(torch.randint(2**62, ()).item())
            if self.trainer is not None:
                self.seed = self.trainer.strategy.broadcast(self.seed)
        world_size, rank = self._world()
        sampler = SeededSampler(
            self.train_set,
            self.seed,
            shuffle=not self.hparams.serial_batches,
            num_replicas=world_size,
            rank=rank,
            resume=self._resume,
        )
        return self._loader(self.train_set, sampler)

    def val_dataloader(self) -> list[DataLoader]:
        """Two loaders: index 0 = domain A, index 1 = domain B."""
        return [self._loader(self.val_sets[d]) for d in ("a", "b")]

    def state_dict(self) -> dict[str, Any]:
        """The data seed and where training stands: ``epoch`` and ``samples_done`` (per rank) of it."""
        trainer = self.trainer
        if trainer is None or self.seed is None:
            return {}
        epoch, done = trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_progress.current.processed
        if done >= trainer.num_training_batches:  # the epoch's batches are all trained: next comes a new epoch
            epoch, done = epoch + 1, 0
        return {"seed": self.seed, "epoch": epoch, "samples_done": done * self.hparams.batch_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the checkpoint's data: its seed, from its position (Lightning calls this before the loaders)."""
        if state:
            self.seed = state["seed"]
            self._resume = (state["epoch"], state["samples_done"])
        if state and state["samples_done"]:
            log.info("resuming epoch %d after its first %d samples", state["epoch"] + 1, state["samples_done"])
            # Lightning warns that a mid-epoch resume is unreliable unless the loader has a state_dict; this one's
            # position is restored here (the loader's own count would be off by Lightning's prefetched batch)
            warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch")
