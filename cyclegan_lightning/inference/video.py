"""Translate a video file frame by frame: what ``predict.py`` does with ``.mp4``, ``.mov``, ``.mkv`` ... inputs.

Decoding and encoding use PyAV (FFmpeg's libraries in one wheel, with libx264 and AAC; maintained by the PyAV
project, used by torchvision and others): the output keeps the input's frame timing (each frame's timestamp, so the
frame rate too, variable rates included) and size, and its first audio stream is copied as it is (re-encoded to AAC
only where MP4 cannot hold its codec). Frames go through ``Translator.translate_tensor`` like images do.

Flicker: an instance-norm generator normalises every frame with that frame's own statistics, so a pan or a moving
object shifts the whole frame's tone a little from frame to frame. ``stats="fixed"`` measures the statistics once,
pooled over ``stats_frames`` frames spread over the clip, and normalises every frame with them: the mechanism tiled
images use to share statistics across tiles (``tiling.measure_norm_stats`` / ``fixed_norm_stats``). Figures:
docs/video.md.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from cyclegan_lightning.checkpoints.atomic import atomic_open
from cyclegan_lightning.data.images import LoadedImage, to_pil
from cyclegan_lightning.errors import ConfigError, DataError, OutputError
from cyclegan_lightning.inference.translator import Translator

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
VIDEO_STATS = ("frame", "fixed")  # instance-norm statistics per frame (as images) | fixed across the clip
MP4_AUDIO = ("aac", "mp3", "alac", "opus", "flac", "ac3", "eac3")  # codecs MP4 holds: copied, not re-encoded


class VideoReadError(DataError):
    """A video file cannot be decoded."""

    def __init__(self, path: str | Path, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"cannot read video {path}: {reason}. Fix or remove this file.")


def _av():
    """PyAV, or a one-line error saying how to install it."""
    try:
        import av
    except ImportError:
        raise ConfigError("videos need PyAV: pip install 'cyclegan-lightning[video]' (or pip install av)") from None
    return av


def check_video_stats(stats: str) -> str:
    if stats not in VIDEO_STATS:
        raise ConfigError(f"video_stats must be one of {VIDEO_STATS}, got {stats!r}")
    return stats


def _open(path: Path):
    av = _av()
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        raise VideoReadError(path, str(exc)) from None
    if not container.streams.video:
        container.close()
        raise VideoReadError(path, "it has no video stream")
    return container


def _frames(container, path: Path) -> Iterator:
    """Decoded video frames; a corrupt stream becomes ``VideoReadError``."""
    av = _av()

    try:
        yield from container.decode(video=0)
    except av.FFmpegError as exc:
        raise VideoReadError(path, str(exc)) from None


def _tensor(frame) -> torch.Tensor:
    """An RGB video frame as (3, H, W) in [0, 1], as ``load_image`` gives an 8-bit RGB image."""
    return torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1).float().div(255)


def count_frames(path: str | Path) -> int:
    """Frames in the first video stream (the container's count, else by decoding)."""
    path = Path(path)
    with _open(path) as container:
        n = container.streams.video[0].frames
        return n if n > 0 else sum(1 for _ in _frames(container, path))


def sample_frames(path: str | Path, n: int) -> torch.Tensor:
    """``n`` frames spread evenly over the clip (all of them if it has fewer), (N, 3, H, W) in [0, 1]."""
    path = Path(path)
    total = count_frames(path)
    wanted = set(np.linspace(0, total - 1, min(n, total)).round().astype(int).tolist())
    with _open(path) as container:
        return torch.stack([_tensor(f) for i, f in enumerate(_frames(container, path)) if i in wanted])


def read_frames(path: str | Path) -> torch.Tensor:
    """Every frame of a (short) clip, (T, 3, H, W) in [0, 1]: for tests and the flicker bench."""
    path = Path(path)
    with _open(path) as container:
        return torch.stack([_tensor(f) for f in _frames(container, path)])


def mean_frame_change(frames: torch.Tensor) -> float:
    """Temporal instability: mean absolute difference between consecutive frames (T, C, H, W), on [0, 1]."""
    return (frames[1:] - frames[:-1]).abs().mean().item()


def translate_video(
    translator: Translator,
    src: str | Path,
    dst: str | Path,
    direction: str = "a2b",
    stats: str = "frame",  # frame | fixed (see the module docstring)
    stats_frames: int = 16,  # frames the fixed statistics are measured on, spread over the clip
    batch_size: int = 1,  # frames per forward (per-frame statistics only)
    crf: int = 18,  # libx264 quality: 0 lossless, 18 visually lossless, 23 FFmpeg's default
    progress: bool = True,
) -> int:
    """Translate ``src`` into the MP4 ``dst`` (written atomically); returns the number of frames."""
    av = _av()

    check_video_stats(stats)
    src, dst = Path(src), Path(dst)
    norm_stats = None
    if stats == "fixed":
        norm_stats = translator.measure_norm_stats(sample_frames(src, stats_frames), direction)
    with _open(src) as container:
        v_in = container.streams.video[0]
        v_in.thread_type = "AUTO"  # decode with FFmpeg's threads
        a_in = container.streams.audio[0] if container.streams.audio else None
        rate = v_in.average_rate or v_in.guessed_rate or 25
        bar = tqdm(total=v_in.frames or None, desc=src.name, unit="frame", disable=not progress)
        try:
            with atomic_open(dst, "wb", fsync=False) as f, av.open(f, "w", format="mp4") as out:
                v_out = _video_stream(out, rate, v_in.codec_context.width, v_in.codec_context.height, crf)
                a_out, resample = _audio_stream(out, a_in)
                n = 0
                pending: list = []

                def flush() -> None:
                    batch = torch.stack([_tensor(fr) for fr in pending])
                    for fr, img in zip(pending, translator.translate_tensor(batch, direction, norm_stats)):
                        new = av.VideoFrame.from_image(to_pil(LoadedImage(img)).convert("RGB"))
                        new.pts, new.time_base = fr.pts, fr.time_base  # the input's timing, frame by frame
                        out.mux(v_out.encode(new))
                    bar.update(len(pending))
                    pending.clear()

                streams = [v_in] + ([a_in] if a_in is not None else [])
                try:
                    for packet in container.demux(streams):
                        if packet.stream.type == "audio":
                            _audio_packet(out, packet, a_out, resample)
                            continue
                        for frame in packet.decode():
                            pending.append(frame)
                            n += 1
                            if len(pending) >= (batch_size if norm_stats is None else 1):
                                flush()
                except av.FFmpegError as exc:
                    raise VideoReadError(src, str(exc)) from None
                if pending:
                    flush()
                out.mux(v_out.encode())
                if resample is not None:
                    out.mux(a_out.encode())
        except OSError as exc:
            raise OutputError(
                f"cannot write {dst}: {exc.strerror or exc}. Free space or fix the folder's permissions, then run "
                "the same command again."
            ) from exc
        finally:
            bar.close()
    return n


def _video_stream(out, rate, width: int, height: int, crf: int):
    """An H.264 stream; 4:2:0 chroma (what every player expects) where both sides are even, else 4:4:4."""
    stream = out.add_stream("libx264", rate=rate)
    stream.width, stream.height = width, height
    stream.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
    stream.options = {"crf": str(crf)}
    return stream


def write_video(
    frames: torch.Tensor, path: str | Path, fps: int = 24, audio: np.ndarray | None = None, sample_rate: int = 16000
) -> Path:
    """Encode frames (T, 3, H, W) in [0, 1] as an MP4 (H.264, crf 0: lossless), with ``audio`` (mono float samples)
    as AAC if given; written atomically. Builds clips from stills (tests, ``bench/bench_video_flicker.py``)."""
    av = _av()

    path = Path(path)
    with atomic_open(path, "wb", fsync=False) as f, av.open(f, "w", format="mp4") as out:
        v_out = _video_stream(out, fps, frames.shape[-1], frames.shape[-2], crf=0)
        a_out = out.add_stream("aac", rate=sample_rate, layout="mono") if audio is not None else None
        for img in frames:
            out.mux(v_out.encode(av.VideoFrame.from_image(to_pil(LoadedImage(img)).convert("RGB"))))
        out.mux(v_out.encode())
        if a_out is not None:
            chunk = 1024  # AAC's frame size
            for i in range(0, len(audio), chunk):
                block = av.AudioFrame.from_ndarray(audio[None, i : i + chunk].astype(np.float32), "fltp", "mono")
                block.sample_rate, block.pts = sample_rate, i
                out.mux(a_out.encode(block))
            out.mux(a_out.encode())
    return path


def pan_over(image: torch.Tensor, width: int, height: int, frames: int, step: int = 1) -> torch.Tensor:
    """A clip panning left to right over a still ``image`` (3, H, W) in [0, 1], scaled to ``height`` rows and wide
    enough for ``frames`` windows of ``width`` moved ``step`` pixels each: (frames, 3, height, width). The clips of
    the tests and of ``bench/bench_video_flicker.py``, built offline."""
    wide = width + step * (frames - 1)
    scaled = torch.nn.functional.interpolate(image[None], size=(height, wide), mode="bilinear", antialias=True)[0]
    return torch.stack([scaled[:, :, i * step : i * step + width] for i in range(frames)]).clamp(0, 1)


def _audio_stream(out, a_in):
    """(output audio stream, resampler or None): a copy of ``a_in`` where MP4 holds its codec, else AAC."""
    if a_in is None:
        return None, None
    if a_in.codec_context.name in MP4_AUDIO:
        return out.add_stream_from_template(a_in), None
    av = _av()

    log.info("audio %s cannot go into MP4 as it is: re-encoded to AAC", a_in.codec_context.name)
    a_out = out.add_stream("aac", rate=a_in.codec_context.sample_rate)
    return a_out, av.AudioResampler(format="fltp", layout=a_in.codec_context.layout, rate=a_out.rate)


def _audio_packet(out, packet, a_out, resample) -> None:
    if packet.dts is None:  # the demuxer's empty flush packet
        return
    if resample is None:
        packet.stream = a_out
        out.mux(packet)
        return
    for frame in packet.decode():
        for converted in resample.resample(frame):
            out.mux(a_out.encode(converted))
