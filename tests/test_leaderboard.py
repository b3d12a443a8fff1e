"""The leaderboard: ranking by known metrics (both directions of better, failures last), the best checkpoint as the
run recorded it (not a file-name glob), epochs and training-time quality at best and last, and two real runs."""

from __future__ import annotations

import csv
import io
import os
import shutil
from pathlib import Path

import torch

from cyclegan_lightning.evaluation import RandomConvFeatures
from cyclegan_lightning.evaluation.leaderboard import (
    RunEntry,
    build_leaderboard,
    rank,
    training_metrics,
    write_leaderboard,
)
from cyclegan_lightning.inference import Translator
from cyclegan_lightning.runs import checkpoint_epoch, find_runs, pick_checkpoint, run_test_folders


def factory(ckpt):
    return Translator.from_checkpoint(ckpt, device="cpu")


def entry(name: str, error: str | None = None, **metrics) -> RunEntry:
    return RunEntry(Path(name), [], metrics={k.replace("__", "/"): v for k, v in metrics.items()}, error=error)


def names(entries):
    return [e.run_dir.name for e in entries]


def test_rank_with_known_metrics_failures_last():
    runs = [
        entry("mid", a2b__fid=20.0, b2a__fid=20.0, a2b__cycle_psnr=20.0),
        entry("broken", error="no .ckpt"),
        entry("worst", a2b__fid=30.0, b2a__fid=40.0, a2b__cycle_psnr=30.0),
        entry("no_value", a2b__cycle_psnr=10.0),
        entry("best", a2b__fid=10.0, b2a__fid=12.0, a2b__cycle_psnr=25.0),
    ]
    ranked, key = rank(runs)  # auto: FID (mean of the directions), lower is better
    assert key == "fid" and names(ranked) == ["best", "mid", "worst", "no_value", "broken"]
    ranked, key = rank(runs, "a2b/cycle_psnr")  # higher is better
    assert names(ranked) == ["worst", "best", "mid", "no_value", "broken"]
    with_swd = [
        entry("a", **{"val__swd@best": 3.0, "a2b__fid": 1.0}),
        entry("b", **{"val__swd@best": 2.0, "a2b__fid": 9.0}),
    ]
    ranked, key = rank(with_swd)  # the training-time quality metric comes first when logged; lower is better
    assert key == "val/swd@best" and names(ranked) == ["b", "a"]


def fake_ckpt(path: Path, epoch: int, best_model_path: str | None = None) -> Path:
    state = {"epoch": epoch, "callbacks": {}}
    if best_model_path:
        state["callbacks"]["ModelCheckpoint{'monitor': 'val/cycle'}"] = {"best_model_path": best_model_path}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def test_best_checkpoint_is_the_recorded_one_and_epochs_are_1_based(tmp_path):
    old = tmp_path / "old"  # a run from before best.ckpt: the recorded best is not the newest best-* file
    fake_ckpt(old / "checkpoints" / "best-epoch0001.ckpt", 1)
    newer = fake_ckpt(old / "checkpoints" / "best-epoch0003.ckpt", 3)
    fake_ckpt(old / "checkpoints" / "last.ckpt", 4, best_model_path="/moved/away/checkpoints/best-epoch0001.ckpt")
    os.utime(newer, (newer.stat().st_mtime + 100,) * 2)
    assert pick_checkpoint(old, "best").name == "best-epoch0001.ckpt"
    assert checkpoint_epoch(pick_checkpoint(old, "best")) == 2 and checkpoint_epoch(pick_checkpoint(old, "last")) == 5

    new = tmp_path / "new"
    fake_ckpt(new / "checkpoints" / "best.ckpt", 2)
    fake_ckpt(new / "checkpoints" / "last.ckpt", 4, best_model_path=str(new / "checkpoints" / "best-epoch0001.ckpt"))
    assert pick_checkpoint(new, "best").name == "best.ckpt"
    (new / "csv").mkdir()
    (new / "csv" / "metrics.csv").write_text(  # Lightning's CSV: 0-based epochs, validation rows apart
        "epoch,step,train/lr,val/swd\n0,1,0.1,\n0,1,,9.0\n1,3,,4.0\n2,5,,3.0\n3,7,,5.0\n4,9,,6.0\n"
    )
    assert training_metrics(new) == {"best_epoch": 3, "val/swd@best": 3.0, "last_epoch": 5, "val/swd@last": 6.0}


def test_leaderboard_ranks_two_real_runs(tiny_runs, tmp_path):
    root, runs = tiny_runs
    sweep = runs[0].parent
    assert find_runs([sweep]) == runs
    assert (
        run_test_folders(runs[0])["test_a"] == f"{root}/testA"
        and run_test_folders(runs[0])["test_b"] == f"{root}/testB"
    )
    assert pick_checkpoint(runs[0], "last").name == "last.ckpt" and pick_checkpoint(runs[0], "best").name != "last.ckpt"

    broken = tmp_path / "broken"
    (broken / "checkpoints").mkdir(parents=True)
    orders = []
    for given in ([runs[0], runs[1], broken], [broken, runs[1], runs[0]]):  # the ranking must not follow the input
        entries, key = build_leaderboard(given, factory, RandomConvFeatures(), max_images=2, progress=False)
        orders.append([e.run_dir for e in entries])
    assert key == "val/swd@best" and orders[0] == orders[1]  # the runs log the quality metric: it ranks
    good = [e for e in entries if not e.error]
    swd = [e.metrics["val/swd@best"] for e in good]
    assert swd == sorted(swd) and swd[0] < swd[1]  # best (lowest val/swd at the best checkpoint) first
    assert all(e.metrics["a2b/fid"] > 0 for e in good)  # FID (random features here) still reported beside it
    assert entries[-1].run_dir == broken and "no .ckpt" in entries[-1].error  # failures listed last, not fatal
    assert all(e.metrics["best_epoch"] == 1 and e.metrics["last_epoch"] == 1 for e in good)

    md, csv_path = write_leaderboard(entries, key, tmp_path / "board")
    text = md.read_text()
    assert "`model.lambda_cycle=5`" in text and "`model.lambda_cycle=10`" in text
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    assert [r["rank"] for r in rows] == ["1", "2", ""] and "model.lambda_cycle=" in rows[0]["overrides"]
    assert float(rows[0]["a2b/fid"]) == good[0].metrics["a2b/fid"] and rows[0]["best_epoch"] == "1"


def test_leaderboard_by_cycle_psnr_without_fid(tiny_runs, tmp_path):
    root, runs = tiny_runs
    for i, run in enumerate(runs):  # run folders given one by one, each keeping only last.ckpt
        shutil.copytree(run, tmp_path / f"r{i}", ignore=shutil.ignore_patterns("best*", "samples", "csv"))
    entries, key = build_leaderboard(
        [tmp_path / "r0", tmp_path / "r1"],
        factory,
        None,
        checkpoint="best",
        data_root=str(root),
        max_images=2,
        progress=False,
    )
    assert key == "cycle_psnr" and all(e.checkpoint.name == "last.ckpt" for e in entries)
    values = [(e.metrics["a2b/cycle_psnr"] + e.metrics["b2a/cycle_psnr"]) / 2 for e in entries]
    assert values == sorted(values, reverse=True)  # higher PSNR first
