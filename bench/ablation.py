"""Ablation of model families and stabilisers at equal wall-clock budgets, several seeds, on offline tasks with
ground truth (the demo's photos: daylight -> dusk, a colour grade; and -> cel shading, a texture change).

    python bench/ablation.py --budgets 2 10 --seeds 0 1 --variants cyclegan,cut,fastcut --jobs 2   # the docs' table
    python bench/ablation.py --budgets 4 --seeds 0 1                                                # every variant

**A budget is wall time on this machine, quiet, with all its cores, turned into a schedule.** First each variant
is *calibrated*: one epoch of ``python train.py experiment=demo <variant>`` alone on the machine with every core,
timed by Lightning's Timer (training loop, in-fit validation and the identity warm-up). A budget of B minutes is
then ``round(B * 60 / seconds_per_epoch)`` epochs (at least 2), half at the full learning rate and half decaying
linearly to 0 (the reference's schedule, scaled to the budget), so every run ends its schedule instead of being
cut off mid-way, and a slower variant gets fewer iterations (the table says how many). The runs themselves may then
share the machine (``--jobs 2``, one thread each): their length is fixed, so the load changes when they finish, not
what they compute. Calibrations are kept in ``<out>/calibration.json`` with the CPU they were measured on, and
reused while that CPU and the variant's overrides stay the same (``--recalibrate`` to redo them).

Afterwards the leaderboard machinery evaluates every run's last checkpoint on the task's test set against its
ground truth, and ``<out>/ablation.md`` gets one table per task and budget: per variant, the mean +- half the range
over seeds of paired PSNR / SSIM (and LPIPS when its backbone is available: ``evaluation.lpips``) of A->B, paired
PSNR of B->A where the task has it, ``val/swd`` at the last epoch (lower is better), epochs, iterations and seconds
per iteration; and a first row for the untouched input (the identity baseline a translation must beat). Each
task's per-run leaderboard is ``<out>/<budget>min/<task>/leaderboard.md``.
"""

from __future__ import annotations

import argparse
import json
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
from cyclegan_lightning.data.images import find_images, load_image  # noqa: E402
from cyclegan_lightning.errors import CycleGANError  # noqa: E402
from cyclegan_lightning.evaluation.leaderboard import build_leaderboard, write_leaderboard  # noqa: E402
from cyclegan_lightning.evaluation.lpips import lpips_metric  # noqa: E402
from cyclegan_lightning.evaluation.plotting import plot_comparison, read_metrics  # noqa: E402
from cyclegan_lightning.evaluation.report import write_text_atomic  # noqa: E402
from cyclegan_lightning.hardware import describe_cpu  # noqa: E402
from cyclegan_lightning.inference import Translator  # noqa: E402
from cyclegan_lightning.metrics.paired import psnr, ssim  # noqa: E402
from cyclegan_lightning.run_layout import RunLayout  # noqa: E402
from cyclegan_lightning.runs import data_folders  # noqa: E402

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
# task name -> demo.py task that builds it (each under <data-dir>/<folder>, with the ground truth of A->B)
DATASETS: dict[str, str] = {"dusk": "dusk", "cel": "cel", "gray2colour": "gray2colour"}
COLUMNS = (  # (header, metric key of a leaderboard entry, of the identity baseline or of our own timing)
    ("PSNR A->B (dB)", "a2b/paired_psnr"),
    ("SSIM A->B", "a2b/paired_ssim"),
    ("LPIPS A->B", "a2b/paired_lpips"),
    ("PSNR B->A (dB)", "b2a/paired_psnr"),
    ("val/swd", "val/swd@last"),
    ("epochs", "epochs"),
    ("iterations", "iterations"),
    ("s/iteration", "s_per_it"),
)
CALIBRATION_EPOCHS = 2  # the second epoch's time is the marginal cost of an epoch; the rest is start-up
NEVER = "00:12:00:00"  # a trainer.max_time no run reaches: it only makes Lightning keep its Timer, which we read


def dataset_root(data_dir: Path, task: str) -> Path:
    return data_dir / ("demo" if task == "dusk" else f"demo_{task}")


def run_dir(out: Path, budget: float, dataset: str, variant: str, seed: int) -> Path:
    return out / f"{budget:g}min" / dataset / re.sub(r"[^A-Za-z0-9_.-]", "_", variant) / f"seed{seed}"


def schedule(epochs: int) -> list[str]:
    """``epochs`` as the reference's schedule: the first half at the full learning rate, the rest decaying to 0."""
    constant = (epochs + 1) // 2
    return [f"model.n_epochs={constant}", f"model.n_epochs_decay={epochs - constant}"]


def train_command(data: Path, variant: list[str], seed: int, epochs: int, run: Path, extra: list[str]) -> list[str]:
    """The train.py command of one run (``experiment=demo`` on ``data``, the variant's overrides, the schedule)."""
    return [
        "train.py",
        "experiment=demo",
        f"data.root={data}",
        "data.build_demo=false",
        *variant,
        f"seed={seed}",
        *schedule(epochs),
        f"++trainer.max_time={NEVER}",
        "trainer.enable_progress_bar=false",
        *extra,
        f"hydra.run.dir={run}",
    ]


def timing(run: Path) -> dict[str, float]:
    """Epochs and iterations done, seconds of training per iteration (Lightning's Timer, from the last checkpoint)."""
    try:
        ckpt = safe_load(RunLayout(run).last)
    except CycleGANError:
        return {}
    seconds = next((v["time_elapsed"]["train"] for k, v in ckpt.get("callbacks", {}).items() if k == "Timer"), None)
    batches = ckpt["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["completed"]
    # (with several epochs, "total" counts all of them; global_step would count optimizer steps: 2-3 per batch)
    out = {"iterations": float(batches), "epochs": float(ckpt["epoch"] + 1)}
    if seconds and batches:
        out["s_per_it"] = seconds / batches
        out["seconds"] = seconds
    return out


def finished(run: Path, epochs: int) -> bool:
    """Whether ``run`` ended its schedule: its last checkpoint is at the end of the last epoch (a run stopped by a
    signal also leaves a ``last.ckpt``, mid-schedule)."""
    if not RunLayout(run).last.is_file():
        return False
    try:
        ckpt = safe_load(RunLayout(run).last)
    except CycleGANError:
        return False
    batches = ckpt.get("loops", {}).get("fit_loop", {}).get("epoch_loop.batch_progress", {})
    return ckpt.get("epoch", -1) + 1 == epochs and bool(batches.get("is_last_batch"))


def train_one(label: str, cmd: list[str], run: Path, threads: int) -> bool:
    """One ``train.py`` run with ``threads`` intra-op threads; a failure is logged with its output kept."""
    log.info("%s: %s", label, shlex.join(["python", *cmd]))
    start = time.perf_counter()
    env = os.environ | {"OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run([sys.executable, *cmd], cwd=ROOT, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        run.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run / "ablation_error.log", proc.stdout[-5000:] + proc.stderr[-20000:])
        log.warning("%s failed (exit %d): see %s", label, proc.returncode, run / "ablation_error.log")
        return False
    log.info("%s: %.0f s", label, time.perf_counter() - start)
    return True


def calibrate(name: str, overrides: list[str], data: Path, out: Path, extra: list[str]) -> dict:
    """Seconds per epoch (the marginal cost, from the gap between the two epochs' sample grids) and the start-up
    (identity warm-up, workers, sanity check) of ``name``, trained alone with every core."""
    run = out / "calibration" / re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    cmd = train_command(data, overrides, 0, CALIBRATION_EPOCHS, run, extra)
    load = os.getloadavg()[0]
    if not train_one(f"calibrate {name}", cmd, run, threads=os.cpu_count() or 1):
        raise SystemExit(f"calibration of {name} failed: see {run / 'ablation_error.log'}")
    grids = sorted(RunLayout(run).samples.glob("epoch_*.png"))
    total = timing(run).get("seconds")
    if len(grids) < CALIBRATION_EPOCHS or total is None:
        raise SystemExit(f"calibration of {name}: no epoch grids or Timer in {run}")
    per_epoch = grids[-1].stat().st_mtime - grids[-2].stat().st_mtime
    return {
        "overrides": overrides + extra,
        "seconds_per_epoch": per_epoch,
        "startup_seconds": max(0.0, total - CALIBRATION_EPOCHS * per_epoch),
        "cpu": describe_cpu(),
        "threads": os.cpu_count(),
        "load_at_start": round(load, 2),
    }


def epochs_for(budget_min: float, cal: dict) -> int:
    """Epochs of a variant that fit ``budget_min`` minutes (start-up included) by its calibration; at least 2."""
    return max(2, round((budget_min * 60 - cal["startup_seconds"]) / cal["seconds_per_epoch"]))


def calibrations(chosen, data: Path, out: Path, extra: list[str], redo: bool) -> dict[str, dict]:
    """Every chosen variant's calibration: kept ones reused while CPU and overrides match, the others measured."""
    path = out / "calibration.json"
    kept = json.loads(path.read_text()) if path.is_file() and not redo else {}
    for name, overrides in chosen:
        cal = kept.get(name)
        if cal is None or cal["cpu"] != describe_cpu() or cal["overrides"] != overrides + extra:
            kept[name] = calibrate(name, overrides, data, out, extra)
            write_text_atomic(path, json.dumps(kept, indent=2))
        log.info(
            "%s: %.1f s per epoch, %.1f s start-up",
            name,
            kept[name]["seconds_per_epoch"],
            kept[name]["startup_seconds"],
        )
    return kept


def identity_baseline(data: Path, perceptual) -> dict[str, float]:
    """Paired scores of the untouched input: the floor a translation has to beat."""
    folders = data_folders(data)
    out = {}
    for direction, src, truth in (("a2b", "test_a", "paired_b"), ("b2a", "test_b", "paired_a")):
        if not folders[truth]:
            continue
        pairs = [
            (load_image(f, 3).image, load_image(Path(folders[truth]) / f.name, 3).image)
            for f in find_images(folders[src])
        ]
        out[f"{direction}/paired_psnr"] = statistics.fmean(psnr(x, t) for x, t in pairs)
        out[f"{direction}/paired_ssim"] = statistics.fmean(ssim(x, t) for x, t in pairs)
        if perceptual is not None:
            out[f"{direction}/paired_lpips"] = statistics.fmean(float(perceptual(x, t)) for x, t in pairs)
    return out


def mean_spread(values: list[float], digits: int | None = None) -> str:
    if not values:
        return "-"
    digits = digits if digits is not None else 4 if max(abs(v) for v in values) < 1 else 2
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    half_range = (max(values) - min(values)) / 2
    return f"{statistics.fmean(values):.{digits}f} ± {half_range:.{digits}f}"


def table(rows: dict[str, list[dict]], baseline: dict[str, float], seeds: list[int]) -> list[str]:
    """One Markdown table: the identity baseline, then a row per variant (mean ± half the range over seeds)."""
    columns = [(h, k) for h, k in COLUMNS if k in baseline or any(k in r for runs in rows.values() for r in runs)]
    lines = ["| variant | runs | " + " | ".join(h for h, _ in columns) + " |", "|---" * (len(columns) + 2) + "|"]
    lines.append(
        "| *input unchanged* | - | "
        + " | ".join(mean_spread([baseline[k]]) if k in baseline else "" for _, k in columns)
        + " |"
    )
    for variant, runs in rows.items():
        ok = [r for r in runs if not r.get("error")]
        cells = [
            mean_spread([r[k] for r in ok if k in r], 0 if k in ("iterations", "epochs") else None) for _, k in columns
        ]
        failed = f" ({len(runs) - len(ok)} failed: {runs[-1]['error'][:80]})" if len(ok) < len(runs) else ""
        lines.append(f"| {variant} | {len(ok)}/{len(seeds)}{failed} | " + " | ".join(cells) + " |")
    return lines + [""]


def evaluate_runs(runs: list[tuple[str, Path]], data: Path, out: Path, perceptual) -> dict[str, list[dict]]:
    """The leaderboard of the finished runs (their last checkpoints on ``data``'s test set), rows by variant."""
    finished = [r for _, r in runs if RunLayout(r).last.is_file()]
    entries, key = (
        build_leaderboard(
            finished,
            lambda ckpt: Translator.from_checkpoint(ckpt, device="cpu"),
            checkpoint="last",
            data_root=str(data),
            rank_by="val/swd@last",
            progress=False,
            perceptual=perceptual,
        )
        if finished
        else ([], "")
    )
    if entries:
        write_leaderboard(entries, key, out)
    by_run = {e.run_dir.resolve(): e for e in entries}
    rows: dict[str, list[dict]] = {}
    for name, run in runs:
        entry = by_run.get(run.resolve())
        if entry is None or entry.error:
            row = {"error": entry.error if entry else "train.py failed (see ablation_error.log)"}
        else:
            row = dict(entry.metrics) | timing(run)
        rows.setdefault(name, []).append(row)
    return rows


def learning_curves(runs: list[tuple[str, Path]], cal: dict[str, dict], out_path: Path, title: str) -> Path | None:
    """Validation PSNR A->B of every run against the minutes of its budget spent (epoch i ends at start-up + i x
    seconds per epoch, by its variant's calibration): where each variant stands when its budget runs out, and
    whether it was still improving. The dashed line is the untouched input on the same validation images."""
    lines, baseline = {}, None
    for name, run in runs:
        csv_path = RunLayout(run).metrics_csv
        if not csv_path.is_file():
            continue
        series = read_metrics(csv_path)
        values = [v for _, v in series.get("val/paired_psnr_a2b", [])]
        spent = [
            (cal[name]["startup_seconds"] + (i + 1) * cal[name]["seconds_per_epoch"]) / 60 for i in range(len(values))
        ]
        lines[f"{name} {run.name.replace('seed', 'seed ')}"] = list(zip(spent, values))
        identity = series.get("val/paired_psnr_identity_a2b")
        baseline = identity[-1][1] if identity and baseline is None else baseline
    if not any(lines.values()):
        return None
    return plot_comparison(
        lines,
        out_path,
        title=title,
        xlabel="minutes of the budget (calibrated)",
        ylabel="val PSNR A->B (dB)",
        baseline=baseline,
    )


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budgets", type=float, nargs="+", default=[4.0], help="minutes of wall time per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--variants", default="all", help="comma-separated names from VARIANTS, or all")
    parser.add_argument("--datasets", nargs="+", default=["dusk", "cel"], choices=list(DATASETS))
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "ablation")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data", help="where the offline datasets are built")
    parser.add_argument("--skip-done", action="store_true", help="keep runs that already ended their schedule")
    parser.add_argument(
        "--no-train", action="store_true", help="train nothing: tabulate the runs that ended their schedule"
    )
    parser.add_argument("--recalibrate", action="store_true", help="measure every variant's epoch time again")
    parser.add_argument("--calibrate-only", action="store_true", help="stop after the calibrations (quiet machine)")
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
    datasets = {d: build_demo_dataset(dataset_root(data_dir, DATASETS[d]), task=DATASETS[d]) for d in args.datasets}
    cal = calibrations(chosen, next(iter(datasets.values())), out, args.override, args.recalibrate)
    if args.calibrate_only:
        return out / "calibration.json"
    perceptual, why_not = lpips_metric("auto")
    if perceptual is None:
        log.warning("no LPIPS column: %s", why_not)

    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    load = os.getloadavg()[0]
    todo, planned = [], []  # every run of every budget first, so --jobs keeps the machine full throughout
    for budget in args.budgets:
        for dataset, data in datasets.items():
            for name, overrides in chosen:
                for seed in args.seeds:
                    run = run_dir(out, budget, dataset, name, seed)
                    epochs = epochs_for(budget, cal[name])
                    cmd = train_command(data, overrides, seed, epochs, run, args.override)
                    done = (args.skip_done or args.no_train) and finished(run, epochs)
                    if done or not args.no_train:
                        planned.append((budget, dataset, name, run))
                    if done:
                        log.info("[%gmin %s] %s seed %d: done already, kept", budget, dataset, name, seed)
                    elif args.no_train:
                        log.info("[%gmin %s] %s seed %d: not finished, left out", budget, dataset, name, seed)
                    else:
                        todo.append((f"[{budget:g}min {dataset}] {name} seed {seed}", cmd, run))
    start = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # each job is its own train.py process
        list(pool.map(lambda job: train_one(*job, threads=threads), todo))
    end = time.strftime("%H:%M UTC", time.gmtime())

    lines = [
        "## Ablation",
        "",
        f"Command: `{command}` ({start} to {end})",
        f"Machine: {describe_cpu()}; {os.cpu_count()} cores; load when the runs started {load:.2f}.",
        f"Runs: {args.jobs} at a time with {threads} thread(s) each, seeds {args.seeds}; mean ± half the range over "
        "seeds. Budgets as epochs from each variant's calibration (alone, every core; seconds per epoch / start-up):",
        "",
        *(
            f"- {n}: {c['seconds_per_epoch']:.1f} s / {c['startup_seconds']:.1f} s (load {c['load_at_start']})"
            for n, c in cal.items()
            if n in {v[0] for v in chosen}
        ),
        "",
        "Each run: `python "
        + shlex.join(train_command(Path("<data>"), ["<variant>"], 0, 2, Path("<run>"), args.override))
        .replace("seed=0", "seed=<seed>")
        .replace("model.n_epochs=1 model.n_epochs_decay=1", "<schedule of the budget>")
        + "`",
        "",
    ]
    for budget in args.budgets:
        for dataset, data in datasets.items():
            runs = [(name, run) for b, d, name, run in planned if b == budget and d == dataset]
            rows = evaluate_runs(runs, data, out / f"{budget:g}min" / dataset, perceptual)
            curves = learning_curves(
                runs, cal, out / f"{budget:g}min" / dataset / "psnr_a2b.png", f"{dataset}, {budget:g} minutes"
            )
            lines += [f"### {dataset}, {budget:g} minutes", ""] + table(
                rows, identity_baseline(data, perceptual), args.seeds
            )
            if curves is not None:
                lines += [f"![val PSNR A->B against the budget spent]({curves.relative_to(out)})", ""]
    report = out / "ablation.md"
    write_text_atomic(report, "\n".join(lines))
    print(report.read_text())
    return report


if __name__ == "__main__":
    main()
