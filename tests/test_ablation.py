"""bench/ablation.py: runs every variant x seed through train.py at the given budget, evaluates them with the
leaderboard and writes one table row per variant and task (2 tiny variants x 1 seed here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY_RUN = [  # seconds per run: a narrow demo network, 2 batches, no identity init, no workers
    "model.generator.ngf=8",
    "model.discriminator.ndf=8",
    "model.identity_init_steps=0",
    "++trainer.limit_train_batches=2",
    "++trainer.limit_val_batches=2",
    "trainer.max_epochs=1",
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


def test_two_tiny_variants_give_a_table_row_each(tmp_path, monkeypatch):
    """Two train.py processes and their evaluation: 36 s on the 2-core machine at load 4."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("CYCLEGAN_ROOT", str(tmp_path))
    ablation = load_ablation()
    argv = ["--variants", "cyclegan,ema", "--seeds", "0", "--datasets", "demo", "--budget", "00:00:01:00"]
    argv += ["--out", str(tmp_path / "out"), "--data-dir", str(tmp_path / "data")]
    argv += [a for o in TINY_RUN for a in ("--override", o)]
    report = ablation.main(argv).read_text()
    assert "python bench/ablation.py --variants cyclegan,ema" in report  # the exact command
    rows = [line for line in report.splitlines() if line.startswith("| cyclegan ") or line.startswith("| ema ")]
    assert len(rows) == 2
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] == "1/1"  # the run finished
        swd, psnr_ab, psnr_ba, s_per_it, iterations = (float(c) for c in cells[2:])
        assert swd > 0 and 5 < psnr_ab < 60 and 5 < psnr_ba < 60 and s_per_it > 0 and iterations == 2
    assert (tmp_path / "out" / "demo" / "leaderboard.md").is_file()
    assert (tmp_path / "out" / "demo" / "ema" / "seed0" / "checkpoints" / "last.ckpt").is_file()
