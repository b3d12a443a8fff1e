"""CUT's patch sampler and projection head F (the official ``PatchSampleF`` with ``netF=mlp_sample``).

For each tapped encoder layer it picks ``num_patches`` positions, shared by every image of the batch and reused
for the query, and projects each patch with a 2-layer MLP onto the unit sphere. The PatchNCE loss compares them.

Two choices differ from the official code, and neither changes the computation:
- **Eager MLPs.** The official code builds the MLPs on the first batch (``create_mlp``), because it reads the widths
  off the features. Here they are built in ``__init__`` from the known channel widths
  (``ResnetGenerator.feature_channels``). So F is complete from the start: ``load_state_dict``, resume, DDP wrapping
  and the optimizer all see its parameters without a data-dependent warm-up pass. State-dict keys are the official
  ``mlp_{i}.{0,2}.{weight,bias}``, so official ``*_net_F.pth`` files load with ``strict=True``.
- **Explicit RNG.** The positions come from a caller-owned ``torch.Generator`` (a CPU one; ids are moved to the
  feature's device afterwards). The official code draws them from numpy's global RNG. Here sampling is reproducible
  and resumable: save ``generator.get_state()`` with the run. The same seed also gives the same patches on CPU and GPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .layers import init_weights


class PatchSampleF(nn.Module):
    """Sample ``num_patches`` positions per layer, then project each patch: ``(B, C_l, H, W) -> (B, P, nc)``."""

    def __init__(
        self,
        in_channels: Sequence[int],  # channels of each tapped layer, e.g. (3, 128, 256, 256, 256) for CUT's default G
        num_patches: int = 256,  # positions sampled per layer (the official num_patches)
        nc: int = 256,  # width of the MLP and of the projections (the official netF_nc)
        use_mlp: bool = True,  # False: project nothing, only sample and L2-normalise (the official netF=sample)
        init_type: str = "xavier",  # CUT initialises every network with xavier_normal...
        init_gain: float = 0.02,  # ...of gain 0.02, biases zero
    ):
        super().__init__()
        if num_patches < 1:
            raise ValueError(f"num_patches must be >= 1, got {num_patches}")
        self.in_channels, self.num_patches, self.use_mlp = tuple(in_channels), num_patches, use_mlp
        if use_mlp:
            for i, channels in enumerate(self.in_channels):
                self.add_module(f"mlp_{i}", nn.Sequential(nn.Linear(channels, nc), nn.ReLU(), nn.Linear(nc, nc)))
            init_weights(self, init_type, init_gain)

    def sample_ids(self, feats: Sequence[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
        """Per layer, the first ``num_patches`` of a random permutation of its H*W positions (all if fewer)."""
        ids = []
        for feat in feats:
            positions = feat.shape[2] * feat.shape[3]
            perm = torch.randperm(positions, generator=generator, device=generator.device)
            ids.append(perm[: min(self.num_patches, positions)].to(feat.device))
        return ids

    def forward(
        self,
        feats: Sequence[torch.Tensor],
        patch_ids: Sequence[torch.Tensor] | None = None,  # the key's ids, to sample the query at the same positions
        generator: torch.Generator | None = None,  # draws fresh ids when patch_ids is None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Return the projections ``(B, P, nc)`` per layer and the ids used (pass them back for the query)."""
        if len(feats) != len(self.in_channels):
            raise ValueError(
                f"PatchSampleF was built for {len(self.in_channels)} layers, got {len(feats)} feature maps"
            )
        if patch_ids is None:
            if generator is None:
                raise ValueError("PatchSampleF needs patch_ids (to reuse the key's positions) or a torch.Generator")
            patch_ids = self.sample_ids(feats, generator)
        projections = []
        for i, (feat, ids) in enumerate(zip(feats, patch_ids)):
            x = feat.permute(0, 2, 3, 1).flatten(1, 2)[:, ids.to(feat.device), :]  # (B, P, C), one row per patch
            if self.use_mlp:
                x = getattr(self, f"mlp_{i}")(x)
            # the official Normalize, x / (|x| + 1e-7), except that an all-zero projection (a patch of a ReLU-tapped
            # layer that is zero everywhere) gets a zero gradient instead of NaN: the clamp changes |x| only below 1e-10
            norm = x.pow(2).sum(-1, keepdim=True).clamp_min(1e-20).pow(0.5)
            projections.append(x / (norm + 1e-7))
        return projections, list(patch_ids)
