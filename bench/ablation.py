"""Ablation of the stabilisers and model families at an equal wall-clock budget, 2 seeds each, on two offline tasks.

    python bench/ablation.py --budget 00:00:04:00 --seeds 0 1                 # everything in VARIANTS x DATASETS
    python bench/ablation.py --variants cyclegan,ema --datasets demo --seeds 0  # a subset

Each run is a plain ``python train.py experiment=demo <dataset> <variant> seed=<s> ++trainer.max_time=<budget>``
(so whatever train.py does, the ablation does), one after another so no two runs share the CPU. The budget is
Lightning's ``trainer.max_time``: every variant trains for the same wall time (its Timer counts the training loop
with the in-fit validation and the identity-init steps), and stops earlier only if it reaches the experiment's
``max_epochs`` first (the ``iterations`` column shows how far each got). Afterwards the leaderboard machinery
(``cyclegan_lightning.evaluation.leaderboard``) evaluates every run's last checkpoint on the task's test set with
its ground truth, and this script writes ``<out>/ablation.md``: per task and variant, the mean +- half the range
over seeds of ``val/swd`` (the training-time quality metric at the last checkpoint; lower is better), paired PSNR
of both directions against the ground truth (dB, higher is better), and seconds per training iteration (the
Timer's training time over the batches done), with the exact command. Each task's full per-run leaderboard is
``<out>/<task>/leaderboard.md``.

Edit VARIANTS and DATASETS below to change what is compared; variants whose config is missing (``model=cut`` before
the CUT branch is merged) fail their runs and show up as such in the table, the others are unaffected.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from cyclegan_lightning.checkpoints.loading import safe_load  # noqa: E402
from cyclegan_lightning.data.demo import build_demo_dataset  # noqa: E402
from cyclegan_lightning.errors import CycleGANError  # noqa: E402
from cyclegan_lightning.evaluation.leaderboard import build_leaderboard, write_leaderboard  # noqa: E402
from cyclegan_lightning.evaluation.report import write_text_atomic  # noqa: E402
from cyclegan_lightning.hardware import describe_cpu  # noqa: E402
from cyclegan_lightning.inference import Translator  # noqa: E402

log = logging.getLogger("ablation")

DIFFAUGMENT = "model.diffaugment='color,translation,cutout'"
# (name, train.py overrides): what is compared. A plain list: add, remove or reorder freely.
VARIANTS: list[tuple[str, list[str]]] = [
    ("cyclegan", []),
    ("diffaugment", [DIFFAUGMENT]),
    ("ada", [DIFFAUGMENT, "model.ada_target=0.6"]),
    ("ema", ["model.ema_decay=0.99"]),  # a horizon of ~100 iterations: runs here are short (0.999 for long ones)
    ("spectral_norm", ["model.discriminator.spectral_norm=true"]),
    ("r1", ["model.lambda_r1=1.0"]),
    ("resize_conv", ["model.generator.upsample=resize"]),
    ("cut", ["model=cut"]),
    ("fastcut", ["model=fastcut"]),
]
# task name -> demo.py task that builds it (each under <data-dir>/<folder>, with ground truth for paired PSNR)
DATASETS: dict[str, str] = {"demo": "dusk", "gray2colour": "gray2colour"}
COLUMNS = (  # (header, metric key of a leaderboard entry or of our own timing)
    ("val/swd", "val/swd@last"),
    ("PSNR A->B (dB)", "a2b/paired_psnr"),
    ("PSNR B->A (dB)", "b2a/paired_psnr"),
    ("s/iteration", "s_per_it"),
    ("iterations", "iterations"),
)


def dataset_root(data_dir: Path, task: str) -> Path:
    return data_dir / ("demo" if task == "dusk" else f"demo_{task}")


def run_dir(out: Path, dataset: str, variant: str, seed: int) -> Path:
    return out / dataset / re.sub(r"[^A-Za-z0-9_.-]", "_", variant) / f"seed{seed}"


def train_command(data: Path, variant: list[str], seed: int, budget: str, run: Path, extra: list[str]) -> list[str]:
    """The train.py command of one run (``experiment=demo`` on ``data``, the variant's overrides, the budget)."""
    return [
        "train.py",
        "experiment=demo",
        f"data.root={data}",
        "data.build_demo=false",
        *variant,
        f"seed={seed}",
        f"++trainer.max_time={budget}",
        "trainer.enable_progress_bar=false",
        *extra,
        f"hydra.run.dir={run}",
    ]


def timing(run: Path) -> dict[str, float]:
    """Iterations done and seconds per iteration, from the last checkpoint's Timer and loop progress."""
    try:
        ckpt = safe_load(run / "checkpoints" / "last.ckpt")
    except CycleGANError:
        return {}
    seconds = next((v["time_elapsed"]["train"] for k, v in ckpt.get("callbacks", {}).items() if k == "Timer"), None)
    batches = ckpt["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["completed"]
    # (with several epochs, "total" counts all of them; global_step would count optimizer steps: 2-3 per batch)
    out = {"iterations": float(batches)}
    if seconds and batches:
        out["s_per_it"] = seconds / batches
    return out


def train_one(label: str, cmd: list[str], run: Path, threads: int) -> None:
    """One ``train.py`` run with ``threads`` intra-op threads; a failure is logged with its output kept."""
    log.info("%s: %s", label, shlex.join(["python", *cmd]))
    start = time.perf_counter()
    env = os.environ | {"OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run([sys.executable, *cmd], cwd=ROOT, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        run.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run / "ablation_error.log", proc.stdout[-5000:] + proc.stderr[-20000:])
        log.warning("%s failed (exit %d): see %s", label, proc.returncode, run / "ablation_error.log")
    else:
        log.info("%s: %.0f s", label, time.perf_counter() - start)


def mean_spread(values: list[float], digits: int | None = None) -> str:
    if not values:
        return "-"
    digits = digits if digits is not None else 4 if max(abs(v) for v in values) < 1 else 2
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    half_range = (max(values) - min(values)) / 2
    return f"{statistics.fmean(values):.{digits}f} ± {half_range:.{digits}f}"


def summarise(results: dict[str, dict[str, list[dict]]], seeds: list[int]) -> list[str]:
    """One Markdown table per task: a row per variant, mean ± half the range over seeds, failed runs counted."""
    lines = []
    for dataset, variants in results.items():
        lines += [f"### {dataset}", "", "| variant | runs | " + " | ".join(h for h, _ in COLUMNS) + " |"]
        lines.append("|---" * (len(COLUMNS) + 2) + "|")
        for variant, runs in variants.items():
            ok = [r for r in runs if not r.get("error")]
            cells = [mean_spread([r[k] for r in ok if k in r], 0 if k == "iterations" else None) for _, k in COLUMNS]
            failed = f" ({len(runs) - len(ok)} failed: {runs[-1]['error'][:80]})" if len(ok) < len(runs) else ""
            lines.append(f"| {variant} | {len(ok)}/{len(seeds)}{failed} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", default="00:00:04:00", help="trainer.max_time of every run (DD:HH:MM:SS)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--variants", default="all", help="comma-separated names from VARIANTS, or all")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "ablation")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data", help="where the offline datasets are built")
    parser.add_argument("--skip-done", action="store_true", help="keep runs that already have a last.ckpt")
    parser.add_argument("--override", action="append", default=[], help="extra train.py override for every run")
    parser.add_argument(
        "--jobs", type=int, default=1, help="runs at a time, each with cores/jobs threads (OMP_NUM_THREADS)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    chosen = [v for v in VARIANTS if args.variants == "all" or v[0] in args.variants.split(",")]
    unknown = set(args.variants.split(",")) - {v[0] for v in VARIANTS} - {"all"}
    if unknown or not chosen:
        parser.error(f"--variants: unknown {sorted(unknown)}; choose from {[v[0] for v in VARIANTS]}")
    out, data_dir = args.out.resolve(), args.data_dir.resolve()
    command = "python bench/ablation.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )

    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    load = os.getloadavg()[0]
    results: dict[str, dict[str, list[dict]]] = {}
    for dataset in args.datasets:
        data = build_demo_dataset(dataset_root(data_dir, DATASETS[dataset]), task=DATASETS[dataset])
        runs, todo = [], []
        for name, overrides in chosen:
            for seed in args.seeds:
                run = run_dir(out, dataset, name, seed)
                cmd = train_command(data, overrides, seed, args.budget, run, args.override)
                if args.skip_done and (run / "checkpoints" / "last.ckpt").is_file():
                    log.info("[%s] %s seed %d: done already, kept", dataset, name, seed)
                else:
                    todo.append((f"[{dataset}] {name} seed {seed}", cmd, run))
                runs.append((name, run))
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # each job is its own train.py process
            list(pool.map(lambda job: train_one(*job, threads=threads), todo))
        finished = [r for _, r in runs if (r / "checkpoints" / "last.ckpt").is_file()]
        entries, key = (
            build_leaderboard(
                finished,
                lambda ckpt: Translator.from_checkpoint(ckpt, device="cpu"),
                checkpoint="last",
                data_root=str(data),
                rank_by="val/swd@last",
                progress=False,
            )
            if finished
            else ([], "")
        )
        if entries:
            write_leaderboard(entries, key, out / dataset)
        by_run = {e.run_dir.resolve(): e for e in entries}
        results[dataset] = {}
        for name, run in runs:
            entry = by_run.get(run.resolve())
            if entry is None or entry.error:
                row = {"error": entry.error if entry else "train.py failed (see ablation_error.log)"}
            else:
                row = dict(entry.metrics) | timing(run)
            results[dataset].setdefault(name, []).append(row)

    header = [
        "## Ablation",
        "",
        f"Command: `{command}`",
        f"Budget: `trainer.max_time={args.budget}` per run (equal wall time), {args.jobs} run(s) at a time with "
        f"{threads} thread(s) each, seeds {args.seeds}; mean ± half the range over seeds.",
        f"Machine: {describe_cpu()}; load when the runs started {load:.2f}.",
        "",
        "Each run: `python "
        + shlex.join(
            train_command(Path("<data>"), ["<variant>"], 0, args.budget, Path("<run>"), args.override)
        ).replace("seed=0", "seed=<seed>")
        + "`",
        "",
    ]
    report = out / "ablation.md"
    write_text_atomic(report, "\n".join(header + summarise(results, args.seeds)))
    print(report.read_text())
    return report


if __name__ == "__main__":
    main()
