"""Datasets over lists of image files: unpaired A/B pairs for training, one domain for validation; and the
training sampler that makes every sample's random draws a pure function of (seed, epoch, rank, index)."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import struct
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset, DistributedSampler

from cyclegan_lightning.data.images import ImageLoadError, check_bad_image_policy, load_image
from cyclegan_lightning.data.transforms import ResizeTooLargeError

log = logging.getLogger(__name__)

MAX_CONSECUTIVE_BAD = 20  # with policy "skip", give up when this many files in a row cannot be read


class _ImageReader:
    """Reads files of one domain, applying the bad-image policy: ``skip`` moves on to the next file."""

    def __init__(self, files: Sequence[Path], transform: Callable, channels: int, on_bad_image: str):
        self.files = [str(f) for f in files]  # strings pickle cheaply into workers
        self.transform, self.channels = transform, channels
        self.on_bad_image = check_bad_image_policy(on_bad_image)
        self.bad: set[str] = set()  # files found bad in this process (each worker has its own)

    def read(self, index: int) -> tuple[torch.Tensor, str, int]:
        """(image, path, number of bad files skipped to get it)."""
        for skipped in range(MAX_CONSECUTIVE_BAD + 1):
            path = self.files[(index + skipped) % len(self.files)]
            try:
                image = load_image(path, self.channels).image
                try:
                    return self.transform(image), path, skipped
                except ResizeTooLargeError as exc:  # bounded memory: a 1 x 5000 strip under scale_width
                    raise ImageLoadError(path, str(exc)) from None
            except ImageLoadError as exc:
                if self.on_bad_image == "fail":
                    raise
                if path not in self.bad:
                    self.bad.add(path)
                    log.warning("skipping unreadable image (data.on_bad_image=skip): %s", exc)
        raise ImageLoadError(path, f"{MAX_CONSECUTIVE_BAD} files in a row could not be read; check the data folder")


def sample_seed(seed: int, epoch: int, rank: int, index: int) -> int:
    """The seed of one sample's random draws: a hash of (seed, epoch, rank, index), the same in any process."""
    digest = hashlib.blake2b(struct.pack("<4q", seed, epoch, rank, index), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # 63 bits: any torch generator seed


@contextlib.contextmanager
def seeded_draws(seed: int | None):
    """Inside, torch's CPU random state starts from ``seed`` (``None``: unchanged); afterwards it is as before.

    Wraps a sample's B draw, crop and flip (torchvision's transforms draw from torch's global generator), so they
    depend on the sample alone, not on which worker, or the main process, happens to load it.
    """
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # CPU only: never reseeds the CUDA generators
        yield


class SeededSampler(DistributedSampler):
    """Yields ``(index, sample seed)`` for one epoch: the order and every sample's random draws depend only on
    (seed, epoch, rank, index), so 0, 1 or N workers, persistent or not, give the same batches.

    The order is ``DistributedSampler``'s (a shuffle seeded by ``seed + epoch``, or ``range`` without ``shuffle``;
    each rank its share). Being a ``DistributedSampler``, Lightning keeps it under DDP instead of replacing it, and
    calls ``set_epoch`` before each epoch. ``resume=(epoch, samples_done)`` skips the samples that epoch already
    trained on, so a run resumed mid-epoch continues at the next batch.
    """

    def __init__(
        self,
        dataset: Dataset,
        seed: int,
        shuffle: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
        resume: tuple[int, int] = (0, 0),
    ):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.resume_epoch, self.resume_done = resume
        self.epoch = self.resume_epoch  # Lightning may iterate a resumed run's loader before calling set_epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = list(super().__iter__())
        start = self.resume_done if self.epoch == self.resume_epoch else 0
        return iter([(i, sample_seed(self.seed, self.epoch, self.rank, i)) for i in indices[start:]])


class UnpairedImageDataset(Dataset):
    """One epoch = max(|A|, |B|) samples; A by index (wrapping), B at random or, with ``serial_b``, by index.

    Each sample is ``{"a", "b", "path_a", "path_b", "skipped"}``; ``skipped`` counts unreadable files passed over
    so the training loop can log how many were skipped. A key ``(index, seed)`` (from :class:`SeededSampler`)
    draws B, the crops and the flips from ``seed``; a plain ``index`` draws them from the process's random state.
    """

    def __init__(
        self,
        files_a: Sequence[Path],
        files_b: Sequence[Path],
        transform_a: Callable,
        transform_b: Callable,
        channels_a: int = 3,
        channels_b: int = 3,
        serial_b: bool = False,
        on_bad_image: str = "skip",
    ):
        if not files_a or not files_b:
            raise ValueError("both domains need at least one file")
        self.reader_a = _ImageReader(files_a, transform_a, channels_a, on_bad_image)
        self.reader_b = _ImageReader(files_b, transform_b, channels_b, on_bad_image)
        self.serial_b = serial_b

    def __len__(self) -> int:
        return max(len(self.reader_a.files), len(self.reader_b.files))

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, seed = key if isinstance(key, tuple) else (key, None)
        n_b = len(self.reader_b.files)
        with seeded_draws(seed):
            index_b = index % n_b if self.serial_b else int(torch.randint(n_b, ()).item())
            a, path_a, skipped_a = self.reader_a.read(index % len(self.reader_a.files))
            b, path_b, skipped_b = self.reader_b.read(index_b)
        return {"a": a, "b": b, "path_a": path_a, "path_b": path_b, "skipped": skipped_a + skipped_b}


class SingleDomainDataset(Dataset):
    """Images of one domain in a fixed order (validation, prediction): ``{"image", "path", "skipped"}``."""

    def __init__(self, files: Sequence[Path], transform: Callable, channels: int = 3, on_bad_image: str = "skip"):
        if not files:
            raise ValueError("need at least one file")
        self.reader = _ImageReader(files, transform, channels, on_bad_image)

    def __len__(self) -> int:
        return len(self.reader.files)

    def __getitem__(self, index: int) -> dict:
        image, path, skipped = self.reader.read(index)
        return {"image": image, "path": path, "skipped": skipped}
