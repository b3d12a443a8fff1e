"""Health signals of a translation run, computed from tensors the steps already have (no extra forward pass):
how far translations drift from their inputs, how diverse they are, how often a discriminator decides right.
What healthy looks like for each: docs/quality.md; the callback that warns on them: ``evaluation/health.py``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import Metric

DECISION_THRESHOLD = {"lsgan": 0.5, "vanilla": 0.0}  # lsgan targets 1/0; vanilla outputs logits. wgangp: none
DIVERSITY_SIZE = 32  # images are pooled to at most this side before comparing them (any input size works)


def translation_change(source: torch.Tensor, translated: torch.Tensor) -> torch.Tensor:
    """Per-image mean |translated - source|; domains with different channel counts are compared in gray."""
    if source.shape[1] != translated.shape[1]:
        source, translated = source.mean(1, keepdim=True), translated.mean(1, keepdim=True)
    return (translated.float() - source.float()).abs().flatten(1).mean(1)


def discriminator_accuracy(prediction: torch.Tensor, target_is_real: bool, gan_mode: str) -> torch.Tensor | None:
    """Fraction of a discriminator's patch decisions on the correct side; None for modes without a threshold."""
    threshold = DECISION_THRESHOLD.get(gan_mode)
    if threshold is None:
        return None
    pred = prediction.detach()
    return ((pred > threshold) if target_is_real else (pred <= threshold)).float().mean()


class DiversityRatio(Metric):
    """Spread of the translations across images divided by the spread of their inputs, where spread is the
    root-mean-square distance of an image from the set's mean image (for a set, half the mean pairwise squared
    distance, so no pairs are stored). Kept as running sums: cheap, and summed across DDP ranks."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, channels_in: int, channels_out: int, size: int = DIVERSITY_SIZE, **kwargs):
        super().__init__(**kwargs)
        self.size = size
        self.add_state("n", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        for name, c in (("in", channels_in), ("out", channels_out)):
            self.add_state(f"sum_{name}", default=torch.zeros(c, size, size, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"sq_{name}", default=torch.zeros(c, size, size, dtype=torch.float64), dist_reduce_fx="sum")

    def _pooled(self, images: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(images.detach().float(), self.size).double()

    def update(self, inputs: torch.Tensor, outputs: torch.Tensor) -> None:
        self.n += inputs.shape[0]
        for name, images in (("in", inputs), ("out", outputs)):
            x = self._pooled(images)
            setattr(self, f"sum_{name}", getattr(self, f"sum_{name}") + x.sum(0))
            setattr(self, f"sq_{name}", getattr(self, f"sq_{name}") + (x * x).sum(0))

    def _spread(self, name: str) -> torch.Tensor:
        mean = getattr(self, f"sum_{name}") / self.n
        return (getattr(self, f"sq_{name}") / self.n - mean * mean).clamp_min(0).mean().sqrt()

    def compute(self) -> torch.Tensor:
        if self.n < 2:
            return torch.tensor(float("nan"), device=self.device)
        return (self._spread("out") / self._spread("in").clamp_min(1e-8)).float()
