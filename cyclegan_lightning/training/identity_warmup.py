"""The identity warm-up (``model.identity_init_steps``): before a fresh fit, train the generators alone to copy their
input, so the adversarial game starts from a map that keeps the content.

Freshly initialised generators output noise, and the adversarial game wrecks the content before the cycle loss
teaches it to keep it (small data, short runs; PITFALLS.md 15); starting from an identity map keeps the content from
the first step, so the run only has to learn the style. Opt-in, for demos and small data; the reference starts from
the random init. It is a run's business (its own little training loop over the datamodule's images, with a
throwaway optimizer), so it lives here and ``run_training`` adds it to every fit; the setting stays the model's.
"""

from __future__ import annotations

import itertools
import logging

import lightning as L
import torch
import torch.distributed as dist
import torch.nn.functional as F

from cyclegan_lightning.directions import ENDPOINTS
from cyclegan_lightning.errors import ConfigError

log = logging.getLogger(__name__)


class IdentityWarmup(L.Callback):
    """At the start of a fresh fit (not a resumed one: it has its trained generators), run
    ``train_generators_to_identity`` for the model's ``identity_init_steps`` (0: nothing)."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        steps = pl_module.hparams.get("identity_init_steps", 0)
        if not steps or trainer.ckpt_path is not None:
            return
        data = getattr(trainer.datamodule, "train_set", None)
        if data is None:
            raise ConfigError("model.identity_init_steps needs a datamodule with a train_set (UnpairedDataModule)")
        train_generators_to_identity(pl_module.generators, data, steps, pl_module.device)


def train_generators_to_identity(
    generators: dict[str, torch.nn.Module],
    data,
    steps: int,
    device: torch.device,
    batch_size: int = 4,
    lr: float = 1e-3,
) -> None:
    """Train ``generators`` (by direction) for ``steps`` steps of L1 between each one's output and its input, on
    images of its output domain drawn from ``data`` (samples ``{"a": .., "b": ..}``), with a throwaway Adam. Under
    DDP every rank then takes rank 0's weights, as DDP starts from rank 0's."""
    opt = torch.optim.Adam(itertools.chain(*(g.parameters() for g in generators.values())), lr=lr, betas=(0.5, 0.999))
    pick = torch.Generator().manual_seed(0)
    for _ in range(steps):
        index = torch.randint(len(data), (batch_size,), generator=pick).tolist()
        samples = [data[i] for i in index]
        loss = 0.0
        for direction, gen in generators.items():  # each generator on images of its output domain
            real = torch.stack([s[ENDPOINTS[direction][1]] for s in samples]).to(device)
            loss = loss + F.l1_loss(gen(real), real)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        # ranks drew different crops: every rank starts from rank 0's result
        for gen in generators.values():
            for tensor in itertools.chain(gen.parameters(), gen.buffers()):
                dist.broadcast(tensor.data, src=0)
    final = float(loss.detach()) / len(generators)  # (a float of a tensor with a graph warns)
    log.info("generators trained to copy their input for %d steps (L1 %.4f)", steps, final)
