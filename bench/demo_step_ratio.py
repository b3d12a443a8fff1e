"""How long does the demo take on a quiet machine? Times one training iteration of two model configs interleaved
in one process (ratios survive a loaded machine), so a known quiet-machine wall time of one config scales to
the other.

    python bench/demo_step_ratio.py                       # the old demo (ngf 32) vs the current demo.yaml model
    python bench/demo_step_ratio.py --other model.generator.ngf=24

Random 64x64 batches of 1, the real generator/discriminator/loss code; no data loading or validation.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import time

import hydra
import torch
from common import compose_train  # noqa: E402  (bench/common.py puts the project on sys.path)


def make_step(overrides: list[str]):
    cfg = compose_train(["experiment=demo", *overrides])
    model = hydra.utils.instantiate(cfg.model)
    opt_g = torch.optim.Adam(
        itertools.chain(model.gen_a2b.parameters(), model.gen_b2a.parameters()), 2e-4, betas=(0.5, 0.999)
    )
    opt_d = torch.optim.Adam(
        itertools.chain(model.disc_a.parameters(), model.disc_b.parameters()), 2e-4, betas=(0.5, 0.999)
    )
    size = cfg.data.crop_size
    a, b = torch.rand(1, 3, size, size) * 2 - 1, torch.rand(1, 3, size, size) * 2 - 1

    def step() -> None:  # the compute of CycleGAN.training_step, without the trainer
        fake_b = model.gen_a2b(a)
        rec_a = model.gen_b2a(fake_b)
        fake_a = model.gen_b2a(b)
        rec_b = model.gen_a2b(fake_a)
        model._set_discriminators_trainable(False)
        opt_g.zero_grad()
        model.generator_losses(a, b, fake_a, fake_b, rec_a, rec_b)["total"].backward()
        opt_g.step()
        model._set_discriminators_trainable(True)
        opt_d.zero_grad()
        model.discriminator_losses(a, b, fake_a, fake_b)["total"].backward()
        opt_d.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--base",
        nargs="*",
        default=["model.generator.ngf=32", "model.discriminator.ndf=32", "model.lambda_identity=0.5"],
        help="overrides of the base",
    )
    parser.add_argument("--other", nargs="*", default=[], help="overrides of the other (default: demo.yaml as is)")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="steps per config per round")
    args = parser.parse_args()
    torch.manual_seed(0)
    steps = {"base": make_step(args.base), "other": make_step(args.other)}
    for fn in steps.values():
        fn()  # warm-up
    times = {k: [] for k in steps}
    for _ in range(args.rounds):
        for name, fn in steps.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                fn()
            times[name].append((time.perf_counter() - start) / args.steps)
    base, other = statistics.median(times["base"]), statistics.median(times["other"])
    print(f"base {args.base}: {base * 1e3:.1f} ms/step; other {args.other or 'demo.yaml'}: {other * 1e3:.1f} ms/step")
    print(
        f"ratio other/base: {other / base:.3f}  (threads {torch.get_num_threads()}, "
        f"cpu {torch.backends.cpu.get_cpu_capability()}, load {os.getloadavg()[0]:.1f})"
    )


if __name__ == "__main__":
    main()
