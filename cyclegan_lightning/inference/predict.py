"""Translate files and folders on disk, images and videos: what ``predict.py`` runs.

Four steps: ``plan_prediction`` (what to translate, to which files), then for images a pipeline of ``read_chunk``
(decode), ``compute_chunk`` (translate) and ``OutputWriter`` (encode and write) run by ``translate_images`` in
three thread pools; videos go through ``video.translate_video`` one after the other.

Guarantees: an input is never written over (outputs that would land on an input are refused before any work);
every output is written to a temporary file and renamed, so an interrupted run leaves only whole images; a rerun
skips images whose outputs all exist (``overwrite=true`` redoes them), so a half-done folder resumes.
"""

from __future__ import annotations

import contextlib
import html
import logging
import os
import threading
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm

from cyclegan_lightning.checkpoints.atomic import atomic_open
from cyclegan_lightning.data.images import (
    IMG_EXTENSIONS,
    ImageLoadError,
    LoadedImage,
    check_bad_image_policy,
    find_images,
    load_image,
    to_pil,
)
from cyclegan_lightning.directions import REVERSE
from cyclegan_lightning.errors import ConfigError, DataError, OutputError
from cyclegan_lightning.inference.translator import Translator
from cyclegan_lightning.inference.video import VIDEO_EXTENSIONS, VideoReadError, check_video_stats, translate_video

log = logging.getLogger(__name__)
SAVE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")
PREFETCH_CHUNKS = 2  # batches decoded ahead


@dataclass
class Job:
    """One input file and the outputs it should produce (kind -> path)."""

    src: Path
    rel: Path
    outputs: dict[str, Path]

    @property
    def is_video(self) -> bool:
        return self.src.suffix.lower() in VIDEO_EXTENSIONS


@dataclass
class PredictSummary:
    translated: int  # images and videos
    skipped: int
    failed: list[str]
    seconds: float
    output_dir: Path
    videos: int = 0  # of ``translated``

    @property
    def images_per_second(self) -> float:
        return self.translated / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        failed = f", {len(self.failed)} failed" if self.failed else ""
        what = (
            f"{self.translated - self.videos} images and {self.videos} videos"
            if self.videos
            else (f"{self.translated} images")
        )
        return (
            f"{what} translated, {self.skipped} already done{failed} in {self.seconds:.1f} s "
            f"({self.images_per_second:.2f} images/s) -> {self.output_dir}"
        )


def collect_inputs(inputs: str | list[str], output_dir: Path) -> list[tuple[Path, Path]]:
    """(file, name relative to its root) for each input file or folder (recursive), skipping ``output_dir``."""
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    if not inputs:
        raise ConfigError("input is empty: give input=<image or folder> (or a list: input=[a.png,b.png])")
    out_resolved = output_dir.resolve()
    found: list[tuple[Path, Path]] = []
    for item in map(Path, inputs):
        if item.is_dir():
            if item.resolve() == out_resolved:
                raise ConfigError(
                    f"output_dir {output_dir} is the input folder {item}: outputs would overwrite the inputs or mix "
                    "with them. Choose another output_dir (a subfolder is fine)."
                )
            inside = item.resolve() in out_resolved.parents  # output_dir within the input: its files are not inputs
            files = [
                f
                for f in find_images(item, IMG_EXTENSIONS + VIDEO_EXTENSIONS)
                if not (inside and out_resolved in f.resolve().parents)
            ]
            if not files:
                raise DataError(
                    f"input folder {item} holds no images or videos (looked recursively for "
                    f"{', '.join(IMG_EXTENSIONS + VIDEO_EXTENSIONS)})."
                )
            found += [(f, f.relative_to(item)) for f in files]
        elif item.is_file():
            found.append((item, Path(item.name)))
        else:
            raise DataError(f"input {item}: no such file or folder. Give an image, a folder of images, or a list.")
    rels = [rel.with_suffix("") for _, rel in found]
    if len(set(rels)) != len(rels):
        dup = next(r for r in rels if rels.count(r) > 1)
        raise DataError(f"two inputs would write the same output name {dup}: rename one or run them separately.")
    return found


def plan_jobs(
    found: list[tuple[Path, Path]], output_dir: Path, directions: list[str], round_trip: bool, grid: bool, ext: str
) -> list[Job]:
    """Output paths of every input (a video: ``<name>.mp4``, the translation only); refuses any that would be an
    input file."""
    single = len(directions) == 1
    jobs = []
    for src, rel in found:
        video = src.suffix.lower() in VIDEO_EXTENSIONS
        name = rel.with_suffix(".mp4" if video else ext)
        outputs = {}
        for d in directions:
            base = output_dir if single else output_dir / d
            outputs[d] = base / name
            if video:
                continue
            if round_trip:
                outputs[f"{d}_cycle"] = output_dir / f"{d}_cycle" / name
            if grid:
                outputs[f"{d}_grid"] = output_dir / f"{d}_grid" / name
        jobs.append(Job(src, rel, outputs))
    inputs = {src.resolve() for src, _ in found}
    for job in jobs:
        for path in job.outputs.values():
            if path.resolve() in inputs:
                raise ConfigError(
                    f"output {path} would overwrite the input {path}. Choose another output_dir "
                    "(outputs keep the inputs' relative names)."
                )
    return jobs


def save_atomic(loaded: LoadedImage, path: Path) -> None:
    """Write through ``atomic_open`` (readers never see half a file); not fsynced: a folder of thousands of images
    would wait on the disk for each, and an interrupted run is simply run again."""
    img = to_pil(loaded)
    if img.mode in ("RGBA", "LA") and path.suffix.lower() in (".jpg", ".jpeg", ".bmp"):
        img = img.convert("RGB" if img.mode == "RGBA" else "L")  # these formats have no alpha
    try:
        with atomic_open(path, "wb", fsync=False) as f:
            if path.suffix.lower() in (".jpg", ".jpeg"):
                img.save(f, format="JPEG", quality=95)
            else:
                img.save(f, format=_pil_format(path))
    except OSError as exc:  # disk full, permission denied, read-only file system
        raise OutputError(
            f"cannot write {path}: {exc.strerror or exc}. Earlier outputs are intact; free space or fix the "
            "folder's permissions, then run the same command again (finished images are skipped)."
        ) from exc


def _pil_format(path: Path) -> str:
    return {".png": "PNG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP"}[path.suffix.lower()]


def side_by_side(*images: LoadedImage) -> LoadedImage:
    """Images of equal height next to each other (grayscale shown as RGB), 4 white pixels apart."""
    rgb = [im.image.expand(3, -1, -1) if im.image.shape[0] == 1 else im.image for im in images]
    h = rgb[0].shape[1]
    gap = torch.ones(3, h, 4)
    parts = []
    for i, im in enumerate(rgb):
        parts += [im] if i == 0 else [gap, im]
    return LoadedImage(torch.cat(parts, dim=2))


def write_index(output_dir: Path, jobs: list[Job], directions: list[str], limit: int = 500) -> Path:
    """``index.html``: one row per input with its outputs, like the reference's results page."""
    kinds = list(dict.fromkeys(k for job in jobs for k in job.outputs))
    rows = []
    for job in jobs[:limit]:
        tag = '<video controls src="{}" width="256"></video>' if job.is_video else '<img src="{}" width="256">'
        cells = [
            f"<td>{tag.format(html.escape(os.path.relpath(job.src.resolve(), output_dir.resolve())))}"
            f"<br>{html.escape(str(job.rel))}</td>"
        ]
        for k in kinds:
            rel = os.path.relpath(job.outputs[k], output_dir) if k in job.outputs else None
            cells.append(f"<td>{tag.format(html.escape(rel))}</td>" if rel else "<td></td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    head = "<tr><th>input</th>" + "".join(f"<th>{html.escape(k)}</th>" for k in kinds) + "</tr>"
    more = f"<p>first {limit} of {len(jobs)} shown</p>" if len(jobs) > limit else ""
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>cyclegan-lightning results</title></head><body>"
        f"<h1>Translations ({', '.join(directions)})</h1>{more}<table "
        f"border='1'>{head}{''.join(rows)}</table></body></html>"
    )
    path = output_dir / "index.html"
    with atomic_open(path, "w", fsync=False) as f:
        f.write(page)
    return path


def header_size(path: Path) -> tuple[int, int] | None:
    """(height, width) from the image's header, without decoding it; None if it cannot be read (decoding reports it)."""
    try:
        with Image.open(path) as img:
            return img.height, img.width
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def images_at_once(translator: Translator, parallel_images: int | str) -> int:
    """How many images to translate at once. ``auto``: one per torch thread on a CPU with the eager or fastconv
    backend (a batch-1 ResNet uses two cores less fully than two images on one core each: docs/performance.md),
    else 1. The compile and onnxruntime backends and GPUs run one image at a time: ONNX Runtime has its own threads,
    and two threads starting a new image size together made dynamo compile it twice (frozen weights' guards)."""
    threadable = translator.device.type == "cpu" and translator.backend in ("eager", "fastconv")
    if parallel_images == "auto":
        return torch.get_num_threads() if threadable else 1
    if isinstance(parallel_images, bool) or not isinstance(parallel_images, int) or parallel_images < 1:
        raise ConfigError(f"parallel_images must be auto or a whole number >= 1, got {parallel_images!r}")
    if parallel_images > 1 and not threadable:
        raise ConfigError(
            f"parallel_images={parallel_images} needs the CPU with translator.backend=eager or fastconv (this run: "
            f"{translator.device}, backend {translator.backend}). Use parallel_images=1 or auto."
        )
    return parallel_images


@contextlib.contextmanager
def torch_threads_per_image(parallel: int):
    """Give each of ``parallel`` concurrent images an equal share of torch's intra-op threads; restored after."""
    before = torch.get_num_threads()
    if parallel > 1:
        torch.set_num_threads(max(1, before // parallel))
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---- plan ------------------------------------------------------------------------------------------------------
@dataclass
class PredictionPlan:
    """What a run will do: every job, and those with outputs still missing (with the directions to redo)."""

    directions: list[str]
    jobs: list[Job]
    todo: list[tuple[Job, set[str]]]

    @property
    def images(self) -> list[tuple[Job, set[str]]]:
        return [(job, dirs) for job, dirs in self.todo if not job.is_video]

    @property
    def videos(self) -> list[tuple[Job, set[str]]]:
        return [(job, dirs) for job, dirs in self.todo if job.is_video]


def plan_prediction(
    translator: Translator,
    inputs: str | list[str],
    output_dir: Path,
    direction: str,
    round_trip: bool,
    grid: bool,
    overwrite: bool,
    ext: str,
) -> PredictionPlan:
    """Check the settings, find the inputs, name their outputs and leave out what is already done."""
    if ext.lower() not in SAVE_EXTENSIONS:
        raise ConfigError(f"ext={ext}: choose one of {', '.join(SAVE_EXTENSIONS)}")
    directions = list(translator.directions) if direction == "both" else [direction]
    for d in directions:
        if d not in ("a2b", "b2a"):
            raise ConfigError(f"direction must be a2b, b2a or both, got {direction!r}")
        translator.generator(d)  # fails now, with the fix, if the checkpoint lacks it
    jobs = plan_jobs(collect_inputs(inputs, output_dir), output_dir, directions, round_trip, grid, ext)

    def pending(job: Job) -> set[str]:  # directions with an output still missing: only those are redone
        if overwrite:
            return set(directions)
        return {d for d in directions if not all(p.is_file() for k, p in job.outputs.items() if k.split("_")[0] == d)}

    todo = [(job, dirs) for job in jobs if (dirs := pending(job))]
    skipped = len(jobs) - len(todo)
    if skipped:
        log.info(
            "%d of %d inputs already translated in %s: skipped (overwrite=true redoes them)",
            skipped,
            len(jobs),
            output_dir,
        )
    return PredictionPlan(directions, jobs, todo)


# ---- read ------------------------------------------------------------------------------------------------------
Chunk = list[tuple[Job, set[str]]]


@dataclass
class Translation:
    """The decoded images of one chunk in one direction, and (once translated) their outputs."""

    direction: str
    jobs: list[Job]
    loaded: list[LoadedImage]
    fakes: list[LoadedImage] | None = None
    recs: list[LoadedImage | None] | None = None


class ChunkReader:
    """Decodes a chunk of images for each direction it needs; unreadable files are logged and listed in ``failed``
    (``on_bad_image=skip``) or end the run (``fail``)."""

    def __init__(self, translator: Translator, directions: list[str], on_bad_image: str, failed: list[str]):
        self.translator, self.directions = translator, directions
        self.on_bad_image, self.failed = check_bad_image_policy(on_bad_image), failed

    def read(self, chunk: Chunk) -> dict[str, list[tuple[Job, LoadedImage | ImageLoadError]]]:
        """Decode (in the reader thread): errors are kept, to be dealt with in input order by ``usable``."""
        out: dict[str, list[tuple[Job, LoadedImage | ImageLoadError]]] = {}
        for d in self.directions:
            out[d] = []
            for job in (job for job, dirs in chunk if d in dirs):
                try:
                    out[d].append((job, load_image(job.src, self.translator.channels_in(d))))
                except ImageLoadError as exc:
                    out[d].append((job, exc))
        return out

    def usable(self, read: dict[str, list[tuple[Job, LoadedImage | ImageLoadError]]]) -> list[Translation]:
        """The chunk's decoded images per direction; the unreadable ones go by the bad-image policy."""
        work = []
        for d in self.directions:
            loaded, ok = [], []
            for job, item in read[d]:
                if isinstance(item, ImageLoadError):
                    self.bad(job, item)
                else:
                    loaded.append(item)
                    ok.append(job)
            if loaded:
                work.append(Translation(d, ok, loaded))
        return work

    def bad(self, job: Job, error: ImageLoadError | VideoReadError) -> None:
        if self.on_bad_image == "fail":
            raise error
        log.warning("%s", error)
        if str(job.src) not in self.failed:
            self.failed.append(str(job.src))


# ---- compute ---------------------------------------------------------------------------------------------------
def compute_chunk(translator: Translator, work: list[Translation], round_trip: bool) -> list[Translation]:
    """Translate each direction's images (and back, for ``round_trip``)."""
    for t in work:
        t.fakes = translator.translate_loaded(t.loaded, t.direction)
        t.recs = translator.translate_loaded(t.fakes, REVERSE[t.direction]) if round_trip else [None] * len(t.fakes)
    return work


# ---- write -----------------------------------------------------------------------------------------------------
class OutputWriter:
    """Writes one image's outputs; after a failed write (disk full) later ones are not attempted (a rerun does
    them)."""

    def __init__(self, grid: bool):
        self.grid = grid
        self.stop = threading.Event()

    def write(self, job: Job, d: str, real: LoadedImage, fake: LoadedImage, rec: LoadedImage | None) -> None:
        if self.stop.is_set():
            return
        try:
            if self.grid:
                save_atomic(side_by_side(*(x for x in (real, fake, rec) if x is not None)), job.outputs[f"{d}_grid"])
            if rec is not None:
                save_atomic(rec, job.outputs[f"{d}_cycle"])
            save_atomic(fake, job.outputs[d])  # the main output last: its presence means the job is done
        except BaseException:
            self.stop.set()
            raise


# ---- the image pipeline and the videos -------------------------------------------------------------------------
def translate_images(
    translator: Translator,
    chunks: list[Chunk],
    reader: ChunkReader,
    writer: OutputWriter,
    round_trip: bool,
    parallel: int,
    bar: tqdm,
) -> None:
    """Decoding (next chunks) and encoding (earlier images) each run in a thread while the generator computes: PIL
    and zlib release the GIL, so the cores never wait on I/O. ``parallel`` chunks are translated at once, each with
    its share of torch's threads (one image per core keeps every core busy: docs/performance.md). Results are taken
    and written in input order, so a failed write (disk full) leaves exactly the images before it. Few chunks in
    flight bound the memory."""
    read_pool = ThreadPoolExecutor(1, thread_name_prefix="predict-read")
    write_pool = ThreadPoolExecutor(1, thread_name_prefix="predict-write")
    compute_pool = ThreadPoolExecutor(parallel, thread_name_prefix="predict-compute")
    ahead = PREFETCH_CHUNKS + parallel - 1
    most_writes = 2 * max((len(c) for c in chunks), default=1)
    try:
        with torch_threads_per_image(parallel):
            reads = deque(read_pool.submit(reader.read, c) for c in chunks[:ahead])
            computes: deque = deque()
            writes: deque = deque()
            for n, chunk in enumerate(chunks):
                read = reads.popleft().result()
                if n + ahead < len(chunks):
                    reads.append(read_pool.submit(reader.read, chunks[n + ahead]))
                computes.append(
                    (len(chunk), compute_pool.submit(compute_chunk, translator, reader.usable(read), round_trip))
                )
                while computes and (len(computes) >= parallel or n == len(chunks) - 1):
                    size, done = computes.popleft()
                    for t in done.result():
                        writes += [
                            write_pool.submit(writer.write, job, t.direction, *images)
                            for job, *images in zip(t.jobs, t.loaded, t.fakes, t.recs)
                        ]
                    while len(writes) > most_writes or (writes and writes[0].done()):  # a failed write ends the run
                        writes.popleft().result()
                    bar.update(size)
            while writes:
                writes.popleft().result()
    except BaseException:
        writer.stop.set()  # interrupted or failed: no new outputs
        raise
    finally:
        for pool in (read_pool, compute_pool, write_pool):  # a write under way finishes: outputs are whole or absent
            pool.shutdown(wait=True, cancel_futures=True)


def translate_videos(
    translator: Translator, videos: Chunk, reader: ChunkReader, progress: bool, **video_options
) -> int:
    """Each video in each pending direction, one after the other (``video.translate_video``); returns how many
    videos were translated."""
    done = 0
    for job, dirs in videos:
        try:
            for d in sorted(dirs):
                translate_video(translator, job.src, job.outputs[d], d, progress=progress, **video_options)
            done += 1
        except VideoReadError as exc:
            reader.bad(job, exc)
    return done


def run_prediction(
    translator: Translator,
    inputs: str | list[str],
    output_dir: str | Path,
    direction: str = "a2b",  # a2b | b2a | both
    round_trip: bool = False,  # also write A -> B -> A (the cycle reconstruction)
    grid: bool = False,  # also write input | output (| reconstruction) side by side
    html_index: bool = True,
    overwrite: bool = False,  # redo images whose outputs exist
    batch_size: int = 1,  # images (or video frames) of the same size per forward
    ext: str = ".png",
    on_bad_image: str = "skip",  # skip | fail
    progress: bool = True,
    parallel_images: int | str = "auto",  # images translated at once, each on its share of the CPU threads
    video_stats: str = "frame",  # frame | fixed: instance-norm statistics of each frame, or fixed over the clip
    video_stats_frames: int = 16,  # frames the fixed statistics are measured on, spread over the clip
    video_crf: int = 18,  # H.264 quality of translated videos (0 lossless, 18 visually lossless)
) -> PredictSummary:
    """Translate every input; returns counts and timing (also logged as one summary line)."""
    output_dir = Path(output_dir)
    ext = ext if ext.startswith(".") else f".{ext}"
    check_bad_image_policy(on_bad_image)
    check_video_stats(video_stats)
    plan = plan_prediction(translator, inputs, output_dir, direction, round_trip, grid, overwrite, ext)
    images, videos = plan.images, plan.videos
    if videos and (round_trip or grid):
        log.info("round_trip and grid apply to images: videos get their translation only")
    if translator.may_switch_to_compile:  # only then read the headers
        translator.compile_if_it_pays(Counter(size for job, _ in images if (size := header_size(job.src))))
    output_dir.mkdir(parents=True, exist_ok=True)
    failed: list[str] = []
    reader = ChunkReader(translator, plan.directions, on_bad_image, failed)
    start = time.perf_counter()
    step = max(1, batch_size)
    chunks = [images[i : i + step] for i in range(0, len(images), step)]
    parallel = min(images_at_once(translator, parallel_images), max(1, len(chunks)))  # one image: all threads on it
    translator.prepare(plan.directions + ([REVERSE[d] for d in plan.directions] if round_trip else []))
    bar = tqdm(total=len(images), desc="translating", unit="img", disable=not progress or not images)
    translate_images(translator, chunks, reader, OutputWriter(grid), round_trip, parallel, bar)
    bar.close()
    n_videos = translate_videos(
        translator,
        videos,
        reader,
        progress,
        stats=video_stats,
        stats_frames=video_stats_frames,
        batch_size=step,
        crf=video_crf,
    )
    seconds = time.perf_counter() - start
    if html_index and plan.jobs:
        write_index(output_dir, plan.jobs, plan.directions)
    done = len(plan.todo) - len(failed)
    summary = PredictSummary(done, len(plan.jobs) - len(plan.todo), failed, seconds, output_dir, n_videos)
    log.info("%s", summary.line())
    return summary
