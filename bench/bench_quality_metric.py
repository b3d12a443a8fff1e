"""Cost of the validation quality metric (SWD, ``val/swd``) and the health signals against an epoch, in one process.

    python bench/bench_quality_metric.py                    # the demo (python train.py), 2 epochs
    python bench/bench_quality_metric.py --test-images 48   # as if the demo had 48 test images per domain
    python bench/bench_quality_metric.py --set experiment=horse2zebra data.root=/data/h2z trainer=gpu

Runs the real default config (``conf/train.yaml``: experiment demo, its data, callbacks and trainer) with the
metric objects of the module wrapped by timers, so what is timed is exactly what a run pays: their ``update`` in
each validation step and their ``compute`` at the end of validation. An epoch is the time from one
``on_train_epoch_start`` to the next (training, validation, checkpoints and sample grids). The first epoch is
dropped as warm-up when there is more than one. The last line is ``metric_over_epoch=<ratio>`` (budget: 0.10).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import hydra
import torch
from lightning import Callback

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import compose_train, load, machine, median  # noqa: E402


def timed(fn, bucket: list[float]):
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            bucket.append(time.perf_counter() - t)

    return wrapper


class EpochClock(Callback):
    """Wall time of each epoch (train + validation + epoch-end callbacks), and of each validation alone; empties
    ``spent`` when training starts, so the sanity check's metric time is not counted."""

    def __init__(self, spent: dict[str, list[float]]):
        self.spent = spent
        self.epochs: list[float] = []
        self.validations: list[float] = []
        self._t = self._v = None

    def on_train_start(self, trainer, pl_module) -> None:
        for times in self.spent.values():
            times.clear()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        now = time.perf_counter()
        if self._t is not None:
            self.epochs.append(now - self._t)
        self._t = now

    def on_fit_end(self, trainer, pl_module) -> None:
        self.epochs.append(time.perf_counter() - self._t)

    def on_validation_start(self, trainer, pl_module) -> None:
        self._v = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.validations.append(time.perf_counter() - self._v)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--test-images", type=int, default=None, help="cycle the test folders to this many per domain")
    parser.add_argument("--set", nargs="*", default=[], help="config overrides")
    args = parser.parse_args()

    cfg = compose_train([f"trainer.max_epochs={args.epochs}", "trainer.enable_progress_bar=false", *args.set])
    dm = hydra.utils.instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    if args.test_images:
        for d, ds in dm.val_sets.items():
            dm.val_sets[d] = torch.utils.data.Subset(ds, [i % len(ds) for i in range(args.test_images)])
    module = hydra.utils.instantiate(cfg.model)
    spent = {"swd": [], "health": []}
    for group, key in ((module.val_swd, "swd"), (module.val_change, "health"), (module.val_diversity, "health")):
        for metric in group.values():
            metric.update = timed(metric.update, spent[key])
            metric.compute = timed(metric.compute, spent[key])
    clock = EpochClock(spent)
    callbacks = [hydra.utils.instantiate(c) for c in cfg.callbacks.values() if "_target_" in c] + [clock]
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=False)
    trainer.fit(module, datamodule=dm)

    validations = len(clock.validations)
    epochs = clock.epochs[1:] if len(clock.epochs) > 1 else clock.epochs
    epoch_s = median(epochs)
    swd_s, health_s = sum(spent["swd"]) / validations, sum(spent["health"]) / validations
    print(f"# {machine()}; {load()}")
    print(
        f"# {len(dm.train_set)} training images per epoch; {len(dm.val_sets['a'])} A / {len(dm.val_sets['b'])} B "
        f"test images; {trainer.max_epochs} epochs, {validations} validations timed"
    )
    print(f"epoch (median{' after the first' if len(clock.epochs) > 1 else ''}): {epoch_s:.2f} s")
    print(f"validation (median): {median(clock.validations):.3f} s")
    print(f"quality metric (SWD, both directions) per validation: {swd_s * 1e3:.1f} ms")
    print(f"health signals per validation: {health_s * 1e3:.1f} ms")
    finals = {k: float(v) for k, v in sorted(trainer.callback_metrics.items()) if k.startswith(("val/", "train/d/acc"))}
    print("at the end: " + ", ".join(f"{k} {v:.4f}" for k, v in finals.items()))
    print(f"metric_over_epoch={(swd_s + health_s) / epoch_s:.4f}")


if __name__ == "__main__":
    main()
