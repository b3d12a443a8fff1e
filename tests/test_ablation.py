"""bench/ablation.py: calibrates each variant, turns each wall-clock budget into a full schedule, runs every
variant x seed through train.py, evaluates them with the leaderboard and writes a table per task and budget."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TINY_RUN = [  # seconds per run: a narrow demo network, 2 batches, no identity init, no workers
    "model.generator.ngf=8",
    "model.discriminator.ndf=8",
    "model.identity_init_steps=0",
    "++trainer.limit_train_batches=2",
    "++trainer.limit_val_batches=2",
    "data.num_workers=0",
    "data.persistent_workers=false",
]


def load_ablation():
    spec = importlib.util.spec_from_file_location("ablation", ROOT / "bench" / "ablation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_variant_list_is_known_and_plain():
    ablation = load_ablation()
    names = [name for name, _ in ablation.VARIANTS]
    assert names[0] == "cyclegan" and {"ema", "r1", "spectral_norm", "resize_conv", "cut", "fastcut"} <= set(names)
    assert all(isinstance(o, list) and all(isinstance(x, str) for x in o) for _, o in ablation.VARIANTS)
    with pytest.raises(SystemExit):
        ablation.main(["--variants", "cyclegan,nonsense"])


def test_budget_becomes_a_full_schedule_that_fits_it():
    ablation = load_ablation()
    cal = {"seconds_per_epoch": 22.5, "startup_seconds": 7.0}
    for minutes in (0.1, 2, 10, 60):
        epochs = ablation.epochs_for(minutes, cal)
        assert epochs >= 2
        if epochs > 2:  # the schedule uses the budget to within half an epoch
            assert abs(cal["startup_seconds"] + epochs * cal["seconds_per_epoch"] - minutes * 60) <= 22.5 / 2
        constant, decay = (int(o.split("=")[1]) for o in ablation.schedule(epochs))
        assert constant + decay == epochs and 0 <= constant - decay <= 1  # the reference's halves


def test_calibrated_budgets_give_a_table_row_each(tmp_path, monkeypatch):
    """A calibration and two budgets of one tiny variant through train.py, their evaluation and the identity row."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("CYCLEGAN_ROOT", str(tmp_path))
    monkeypatch.setenv("CYCLEGAN_OFFLINE", "1")  # no LPIPS backbone here: the column is left out
    ablation = load_ablation()
    out = tmp_path / "out"
    argv = ["--variants", "cyclegan", "--seeds", "0", "--datasets", "dusk", "--budgets", "0.02", "0.06"]
    argv += ["--out", str(out), "--data-dir", str(tmp_path / "data")]
    argv += [a for o in TINY_RUN for a in ("--override", o)]
    report = ablation.main(argv).read_text()
    assert "python bench/ablation.py --variants cyclegan" in report  # the exact command
    cal = json.loads((out / "calibration.json").read_text())["cyclegan"]
    assert cal["seconds_per_epoch"] > 0 and cal["overrides"] == TINY_RUN
    for budget in (0.02, 0.06):
        section = report.split(f"### dusk, {budget:g} minutes")[1].split("###")[0]
        header = [c.strip() for c in section.strip().splitlines()[0].strip("|").split("|")]
        rows = {r.split("|")[1].strip(): r for r in section.splitlines() if r.startswith("| ")}
        cells = dict(zip(header, (c.strip() for c in rows["cyclegan"].strip("|").split("|"))))
        assert cells["runs"] == "1/1"
        assert int(cells["epochs"]) == ablation.epochs_for(budget, cal)  # the budget's schedule was run in full
        assert int(cells["iterations"]) == 2 * int(cells["epochs"])
        assert 5 < float(cells["PSNR A->B (dB)"]) < 60 and float(cells["val/swd"]) > 0
        identity = dict(zip(header, (c.strip() for c in rows["*input unchanged*"].strip("|").split("|"))))
        assert float(identity["PSNR A->B (dB)"]) == pytest.approx(identity_psnr(tmp_path / "data" / "demo"), abs=0.01)
        assert (out / f"{budget:g}min" / "dusk" / "leaderboard.md").is_file()
        curves = out / f"{budget:g}min" / "dusk" / "psnr_a2b.png"  # the learning curve against the budget spent
        assert f"]({curves.relative_to(out)})" in section and Image.open(curves).size[0] > 300

    def no_training(*args, **kwargs):
        raise AssertionError("a kept calibration and --skip-done runs must not train again")

    monkeypatch.setattr(ablation, "train_one", no_training)
    assert ablation.main(argv + ["--skip-done"]).read_text().count("| cyclegan | 1/1") == 2
    # --no-train tabulates what ended its schedule: seed 1 never ran, so each row holds one run of two
    assert ablation.main(argv + ["--no-train", "--seeds", "0", "1"]).read_text().count("| cyclegan | 1/2") == 2
    run, epochs = ablation.run_dir(out, 0.06, "dusk", "cyclegan", 0), ablation.epochs_for(0.06, cal)
    assert ablation.finished(run, epochs) and not ablation.finished(run, epochs + 1)  # a shorter run is not done


def identity_psnr(root: Path) -> float:
    """Mean PSNR (dB) of the untouched test A images against their A->B truth, computed here with numpy."""
    values = []
    for source in sorted((root / "testA").glob("*.png")):
        x = np.asarray(Image.open(source).convert("RGB"), dtype=np.float64) / 255
        t = np.asarray(Image.open(root / "truthB" / source.name).convert("RGB"), dtype=np.float64) / 255
        values.append(10 * np.log10(1 / np.mean((x - t) ** 2)))
    return float(np.mean(values))
