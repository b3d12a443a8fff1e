"""Does bf16 cost quality? The demo experiment at a fixed small budget in fp32 and in bf16-mixed, compared against
the run-to-run spread of fp32 itself.

    python bench/bf16_quality.py                 # 2 epochs (120 iterations) of experiment=demo, CPU
    python bench/bf16_quality.py --epochs 4 --out outputs/bf16_quality

Three runs through the real ``run_training`` (same config, checkpoints and sample grids as ``train.py``):
fp32 seed 0, bf16-mixed seed 0, fp32 seed 1. A GAN run is chaotic: bf16 and fp32 from the same seed diverge
within a few iterations, as two fp32 runs with different seeds do, so the tolerance is that spread:

- validation cycle error (``val/cycle``, L1 in [-1, 1] units): |bf16 - fp32| <= max(10% of fp32,
  1.25 x |fp32 seed 0 - fp32 seed 1|);
- sample grids (``samples/latest.png``, the same fixed validation images): mean absolute pixel difference
  (in [0, 1]) between the bf16 and fp32 grids <= 1.25 x the one between the two fp32 grids.

Prints one table and ``bf16_quality=PASS`` or ``FAIL`` last.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import compose_train, load, machine  # noqa: E402

from cyclegan_lightning.training.run import run_training  # noqa: E402

MARGIN = 1.25
REL_TOL = 0.10


def run(name: str, precision: str, seed: int, epochs: int, out: Path, batches: int | None = None) -> dict:
    run_dir = out / name
    cfg = compose_train(
        [
            "experiment=demo",
            f"seed={seed}",
            f"trainer.precision={precision}",
            "trainer.accelerator=cpu",
            "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false",
            "logger=none",
            "data.num_workers=0",
            "data.persistent_workers=false",
            "data.pin_memory=false",
            f"model.n_epochs={epochs // 2}",
            f"model.n_epochs_decay={epochs - epochs // 2}",
            *([f"++trainer.limit_train_batches={batches}"] if batches else []),
        ],
        run_dir,
    )
    t = time.perf_counter()
    metrics = run_training(cfg)
    grid = np.asarray(Image.open(run_dir / "samples" / "latest.png").convert("RGB"), dtype=np.float32) / 255
    return {"name": name, "val_cycle": metrics["val/cycle"], "grid": grid, "s": time.perf_counter() - t}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--batches", type=int, default=None, help="training iterations per epoch (default: all 60)")
    args = p.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="cyclegan-bf16-quality-"))
    print(f"machine: {machine()}; {load()}")
    ref, bf16, ref2 = (
        run("fp32_seed0", "32-true", 0, args.epochs, out, args.batches),
        run("bf16_seed0", "bf16-mixed", 0, args.epochs, out, args.batches),
        run("fp32_seed1", "32-true", 1, args.epochs, out, args.batches),
    )
    d_cycle, spread = abs(bf16["val_cycle"] - ref["val_cycle"]), abs(ref2["val_cycle"] - ref["val_cycle"])
    tol_cycle = max(REL_TOL * ref["val_cycle"], MARGIN * spread)
    d_grid = float(np.abs(bf16["grid"] - ref["grid"]).mean())
    spread_grid = float(np.abs(ref2["grid"] - ref["grid"]).mean())
    tol_grid = MARGIN * spread_grid
    print(f"\nruns in {out} ({args.epochs} epochs x {args.batches or 'all'} batches of experiment=demo each; {load()})")
    print("| run | val/cycle | wall s |\n|---|---|---|")
    for r in (ref, bf16, ref2):
        print(f"| {r['name']} | {r['val_cycle']:.4f} | {r['s']:.0f} |")
    print("\n| check | bf16 vs fp32 | fp32 seed spread | tolerance | ok |\n|---|---|---|---|---|")
    ok_cycle, ok_grid = d_cycle <= tol_cycle, d_grid <= tol_grid
    print(f"| val/cycle abs diff | {d_cycle:.4f} | {spread:.4f} | {tol_cycle:.4f} | {ok_cycle} |")
    print(f"| sample grid mean abs diff | {d_grid:.4f} | {spread_grid:.4f} | {tol_grid:.4f} | {ok_grid} |")
    print(f"bf16_quality={'PASS' if ok_cycle and ok_grid else 'FAIL'}")


if __name__ == "__main__":
    main()
