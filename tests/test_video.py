"""predict.py on videos: a folder of clips and images, each clip re-encoded with its frame count, frame rate, size
and audio (or its absence); fixed instance-norm statistics lower the frame-to-frame change of the output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_images

av = pytest.importorskip("av")

from cyclegan_lightning.inference.predict import run_prediction  # noqa: E402
from cyclegan_lightning.inference.video import mean_frame_change, pan_over, read_frames, write_video  # noqa: E402

FRAMES, FPS, W, H = 12, 12, 64, 48


def pan_clip() -> torch.Tensor:
    """A slow pan (8 pixels a frame) over a photo lit from one side: (12, 3, 48, 64) in [0, 1]."""
    from skimage import data

    photo = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float() / 255
    return pan_over(photo * torch.linspace(0.2, 1.0, photo.shape[-1]), W, H, FRAMES, step=8)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    frames = pan_clip()
    write_video(frames, folder / "with_audio.mp4", FPS, audio=np.sin(np.arange(16000) / 5).astype(np.float32) / 4)
    write_video(frames, folder / "nested" / "silent.mp4", FPS)
    write_images(folder, 1, size=(30, 20))  # an image beside the videos
    return folder


@pytest.fixture(scope="module")
def translator(tmp_path_factory):
    from cyclegan_lightning.inference import build_translator
    from cyclegan_lightning.networks import ResnetGenerator

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("gen") / "latest_net_G.pth"
    torch.save(ResnetGenerator(3, 3, ngf=8, n_blocks=1).state_dict(), path)
    return build_translator(path, {"device": "cpu", "tile_size": None})


def streams(path: Path) -> dict:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = sum(1 for _ in c.decode(video=0))
        return {"frames": frames, "fps": v.average_rate, "size": (v.width, v.height), "audio": bool(c.streams.audio)}


def test_a_folder_of_videos_and_images_keeps_frames_rate_size_and_audio(translator, clips, tmp_path):
    out = tmp_path / "out"
    summary = run_prediction(translator, str(clips), out, progress=False)
    assert summary.translated == 3 and summary.videos == 2 and not summary.failed
    assert (out / "img_000.png").is_file()
    for name, audio in (("with_audio.mp4", True), ("nested/silent.mp4", False)):
        got = streams(out / name)
        assert got == {"frames": FRAMES, "fps": FPS, "size": (W, H), "audio": audio}, name
        assert streams(clips / name)["audio"] == audio
    with av.open(str(clips / "with_audio.mp4")) as a, av.open(str(out / "with_audio.mp4")) as b:
        assert b.streams.audio[0].codec_context.name == "aac"  # copied, not dropped
        assert b.streams.audio[0].duration == a.streams.audio[0].duration
    assert not [p for p in out.rglob(".*") if p.is_file()]  # no temporary files left behind
    again = run_prediction(translator, str(clips), out, progress=False)
    assert again.skipped == 3 and again.translated == 0  # resumable like images


def test_a_corrupt_video_is_skipped_or_fatal(translator, tmp_path):
    from cyclegan_lightning.inference.video import VideoReadError

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(100))
    summary = run_prediction(translator, str(tmp_path / "in"), tmp_path / "out", progress=False)
    assert summary.failed == [str(tmp_path / "in" / "broken.mp4")] and summary.translated == 0
    with pytest.raises(VideoReadError, match="broken.mp4"):
        run_prediction(translator, str(tmp_path / "in"), tmp_path / "o2", progress=False, on_bad_image="fail")
    assert not (tmp_path / "o2" / "broken.mp4").exists()


def test_fixed_statistics_lower_the_frame_to_frame_change(translator, clips, tmp_path):
    change = {}
    for stats in ("frame", "fixed"):
        out = tmp_path / stats
        run_prediction(
            translator, str(clips / "nested"), out, progress=False, video_stats=stats, video_stats_frames=6, video_crf=0
        )
        change[stats] = mean_frame_change(read_frames(out / "silent.mp4"))
    assert change["fixed"] < 0.97 * change["frame"], change
