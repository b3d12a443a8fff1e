"""Differentiable augmentation of every discriminator input: DiffAugment (Zhao et al., NeurIPS 2020, "Differentiable
Augmentation for Data-Efficient GAN Training") with an adaptive probability as in ADA (Karras et al., NeurIPS 2020,
"Training Generative Adversarial Networks with Limited Data").

The three transforms follow the official DiffAugment-pytorch (``DiffAugment_pytorch.py``) exactly: ``color``
(brightness +U(-0.5, 0.5), saturation x U(0, 2), contrast x U(0.5, 1.5), each drawn per image), ``translation``
(integer shift of up to 1/8 of the side, zero fill) and ``cutout`` (one zeroed square of half the side per image).
All are made of additions, multiplications and indexing, so gradients reach the generator through them.

With ``ada_target`` set, each image is augmented with probability ``p`` (the whole policy or nothing, as in ADA's
per-image gate) and ``p`` follows an overfitting signal of the discriminators, ``r_t = E[sign(D(real) - t)]``
(``t`` = 0.5 for lsgan's 1/0 targets, 0 for logits and critics): every ``ada_interval`` discriminator steps, ``p``
moves by ``sign(r_t - ada_target) * images / (ada_kimg * 1000)``, clamped to [0, 1]. ``p`` and the running sums
are buffers, so they are saved in the checkpoint and a resumed run continues exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cyclegan_lightning.errors import ConfigError


def rand_brightness(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device) - 0.5)


def rand_saturation(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device) * 2) + mean


def rand_contrast(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device) + 0.5) + mean


def rand_translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    shift_x, shift_y = int(x.size(2) * ratio + 0.5), int(x.size(3) * ratio + 0.5)
    translation_x = torch.randint(-shift_x, shift_x + 1, size=[x.size(0), 1, 1], device=x.device)
    translation_y = torch.randint(-shift_y, shift_y + 1, size=[x.size(0), 1, 1], device=x.device)
    grid_batch, grid_x, grid_y = torch.meshgrid(
        torch.arange(x.size(0), dtype=torch.long, device=x.device),
        torch.arange(x.size(2), dtype=torch.long, device=x.device),
        torch.arange(x.size(3), dtype=torch.long, device=x.device),
        indexing="ij",
    )
    grid_x = torch.clamp(grid_x + translation_x + 1, 0, x.size(2) + 1)
    grid_y = torch.clamp(grid_y + translation_y + 1, 0, x.size(3) + 1)
    x_pad = F.pad(x, [1, 1, 1, 1, 0, 0, 0, 0])
    return x_pad.permute(0, 2, 3, 1).contiguous()[grid_batch, grid_x, grid_y].permute(0, 3, 1, 2)


def rand_cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    size = int(x.size(2) * ratio + 0.5), int(x.size(3) * ratio + 0.5)
    offset_x = torch.randint(0, x.size(2) + (1 - size[0] % 2), size=[x.size(0), 1, 1], device=x.device)
    offset_y = torch.randint(0, x.size(3) + (1 - size[1] % 2), size=[x.size(0), 1, 1], device=x.device)
    grid_batch, grid_x, grid_y = torch.meshgrid(
        torch.arange(x.size(0), dtype=torch.long, device=x.device),
        torch.arange(size[0], dtype=torch.long, device=x.device),
        torch.arange(size[1], dtype=torch.long, device=x.device),
        indexing="ij",
    )
    grid_x = torch.clamp(grid_x + offset_x - size[0] // 2, min=0, max=x.size(2) - 1)
    grid_y = torch.clamp(grid_y + offset_y - size[1] // 2, min=0, max=x.size(3) - 1)
    mask = torch.ones(x.size(0), x.size(2), x.size(3), dtype=x.dtype, device=x.device)
    mask[grid_batch, grid_x, grid_y] = 0
    return x * mask.unsqueeze(1)


AUGMENT_FNS = {
    "color": (rand_brightness, rand_saturation, rand_contrast),
    "translation": (rand_translation,),
    "cutout": (rand_cutout,),
}


def parse_policy(policy: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """``"color,translation,cutout"`` (or a list of the names, as Hydra gives ``[color,cutout]``) -> its names,
    checked; None or "" -> ()."""
    if isinstance(policy, (list, tuple)):
        policy = ",".join(map(str, policy))
    names = tuple(p.strip() for p in (policy or "").split(",") if p.strip())
    unknown = [n for n in names if n not in AUGMENT_FNS]
    if unknown:
        raise ConfigError(
            f"model.diffaugment: unknown transform(s) {unknown}; use a comma-separated subset of "
            f"{','.join(AUGMENT_FNS)} (or null to turn it off)"
        )
    return names


def diff_augment(x: torch.Tensor, policy: str | tuple[str, ...]) -> torch.Tensor:
    """The official ``DiffAugment(x, policy)`` for NCHW batches: every transform of the policy, in order."""
    for name in parse_policy(policy):
        for fn in AUGMENT_FNS[name]:
            x = fn(x)
    return x


def overfitting_threshold(gan_mode: str) -> float:
    """The score that separates "real" from "fake" decisions: 0.5 between lsgan's targets 1 and 0, else 0."""
    return 0.5 if gan_mode == "lsgan" else 0.0


class DiscriminatorAugment(nn.Module):
    """``augment(x)`` before every discriminator call; adaptive probability when ``target`` is set.

    ``observe(pred_real)`` in each discriminator step collects the overfitting signal; ``step(n_images)`` after it
    adjusts ``p`` every ``interval`` calls and returns ``{"p": .., "rt": ..}`` when it did (for logging).
    """

    def __init__(
        self,
        policy: str | list[str],  # comma-separated subset of color,translation,cutout (or a list of them)
        gan_mode: str = "lsgan",  # picks the threshold of the overfitting signal
        target: float | None = None,  # ADA: the wanted r_t (0.6 in the paper); None: always augment (p = 1)
        interval: int = 4,  # ADA: adjust p every this many discriminator steps
        kimg: float = 100.0,  # ADA: thousands of images for p to move from 0 to 1 (the paper's 500 is for long runs)
    ):
        super().__init__()
        self.policy = parse_policy(policy)
        if not self.policy:
            raise ConfigError("model.diffaugment is empty; give e.g. color,translation,cutout (or null for none)")
        if target is not None and not 0.0 < target < 1.0:
            raise ConfigError(f"model.ada_target must be in (0, 1) or null, got {target}")
        if interval < 1 or kimg <= 0:
            raise ConfigError(f"model.ada_interval must be >= 1 and model.ada_kimg > 0, got {interval}, {kimg}")
        self.adaptive, self.target, self.interval, self.kimg = target is not None, target, interval, kimg
        self.threshold = overfitting_threshold(gan_mode)
        # state, saved with the checkpoint: p starts at 0 under ADA (as in the paper), 1 for plain DiffAugment
        self.register_buffer("p", torch.tensor(0.0 if self.adaptive else 1.0, dtype=torch.float64))
        self.register_buffer("signs", torch.zeros(2, dtype=torch.float64))  # sum of sign(D(real) - t), count
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self.register_buffer("images", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.adaptive:
            return diff_augment(x, self.policy)
        p = float(self.p)
        if p <= 0.0:
            return x
        gate = torch.rand(x.size(0), 1, 1, 1, device=x.device) < p  # each image: the whole policy, or nothing
        return torch.where(gate, diff_augment(x, self.policy), x)

    @torch.no_grad()
    def observe(self, pred_real: torch.Tensor) -> None:
        if self.adaptive:
            signs = torch.sign(pred_real.detach().float() - self.threshold)
            self.signs += torch.stack((signs.sum(), torch.tensor(float(signs.numel()), device=signs.device))).to(
                self.signs
            )

    @torch.no_grad()
    def step(self, n_images: int, reduce=None) -> dict[str, float] | None:
        """Count one discriminator step of ``n_images``; every ``interval`` steps move ``p`` towards the target.
        ``reduce`` sums a tensor over DDP ranks (all ranks then take the same step)."""
        if not self.adaptive:
            return None
        self.calls += 1
        self.images += n_images
        if int(self.calls) % self.interval:
            return None
        totals = reduce(self.signs.clone()) if reduce else self.signs
        images = float(reduce(self.images.double()) if reduce else self.images)
        rt = float(totals[0] / totals[1].clamp(min=1.0))
        adjust = (1.0 if rt > self.target else -1.0 if rt < self.target else 0.0) * images / (self.kimg * 1000)
        self.p.copy_((self.p + adjust).clamp(0.0, 1.0))
        self.signs.zero_()
        self.images.zero_()
        return {"p": float(self.p), "rt": rt}

    def extra_repr(self) -> str:
        ada = f", ada_target={self.target}, interval={self.interval}, kimg={self.kimg}" if self.adaptive else ""
        return f"policy={','.join(self.policy)}{ada}"
