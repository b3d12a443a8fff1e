"""The leaderboard evaluates two real runs, ranks them by the metric, and shows each run's overrides."""

from __future__ import annotations

import csv
import io
import shutil

from cyclegan_lightning.evaluation import RandomConvFeatures
from cyclegan_lightning.evaluation.leaderboard import (
    build_leaderboard,
    find_runs,
    pick_checkpoint,
    run_test_folders,
    write_leaderboard,
)
from cyclegan_lightning.inference import Translator


def factory(ckpt):
    return Translator.from_checkpoint(ckpt, device="cpu")


def test_leaderboard_ranks_two_real_runs(tiny_runs, tmp_path):
    root, runs = tiny_runs
    sweep = runs[0].parent
    assert find_runs([sweep]) == runs
    assert run_test_folders(runs[0]) == (f"{root}/testA", f"{root}/testB")
    assert pick_checkpoint(runs[0], "best").name.startswith("best") and pick_checkpoint(runs[0], "last").name == "last.ckpt"

    broken = tmp_path / "broken"
    (broken / "checkpoints").mkdir(parents=True)
    entries, key = build_leaderboard([sweep, broken], factory, RandomConvFeatures(), progress=False)
    assert key == "fid"
    good = [e for e in entries if not e.error]
    assert [e.run_dir for e in good] and sorted(e.run_dir for e in good) == runs
    means = [(e.metrics["a2b/fid"] + e.metrics["b2a/fid"]) / 2 for e in good]
    assert means == sorted(means)  # best (lowest FID) first
    assert entries[-1].run_dir == broken and "no .ckpt" in entries[-1].error  # failures listed last, not fatal

    md, csv_path = write_leaderboard(entries, key, tmp_path / "board")
    text = md.read_text()
    assert "`model.lambda_cycle=5`" in text and "`model.lambda_cycle=10`" in text
    assert "Overrides common to all runs" not in text or "lambda_cycle" not in text.split("\n")[1]
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    assert [r["rank"] for r in rows] == ["1", "2", ""] and "model.lambda_cycle=" in rows[0]["overrides"]
    assert float(rows[0]["a2b/fid"]) == good[0].metrics["a2b/fid"]


def test_leaderboard_by_cycle_psnr_without_fid(tiny_runs, tmp_path):
    root, runs = tiny_runs
    for i, run in enumerate(runs):  # run folders given one by one, each keeping only last.ckpt
        shutil.copytree(run, tmp_path / f"r{i}", ignore=shutil.ignore_patterns("best*", "samples", "csv"))
    entries, key = build_leaderboard([tmp_path / "r0", tmp_path / "r1"], factory, None, checkpoint="best",
                                     data_root=str(root), max_images=2, progress=False)  # fmt: skip
    assert key == "cycle_psnr" and all(e.checkpoint.name == "last.ckpt" for e in entries)
    values = [(e.metrics["a2b/cycle_psnr"] + e.metrics["b2a/cycle_psnr"]) / 2 for e in entries]
    assert values == sorted(values, reverse=True)  # higher PSNR first
