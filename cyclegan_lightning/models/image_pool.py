"""History of generated images (Shrivastava et al. 2017) that the discriminators are trained on.

Same algorithm as the reference implementation: fill up to ``pool_size``; then per image, with probability 0.5
return a random stored image and store the new one in its place, otherwise return the new one. Unlike the
reference, its randomness comes from its own generator, and ``state_dict``/``load_state_dict`` carry both the
stored images and that generator, so a resumed run draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

import torch


class ImagePool:
    """Per-domain pool of detached fakes. ``pool_size=0`` disables it (``query`` returns its input)."""

    def __init__(self, pool_size: int = 50, seed: int | None = None):
        if pool_size < 0:
            raise ValueError(f"pool_size must be >= 0, got {pool_size}")
        self.pool_size = pool_size
        self.images: list[torch.Tensor] = []
        self.generator = torch.Generator()
        self.generator.manual_seed(int(torch.randint(2**62, ()).item()) if seed is None else seed)

    def __len__(self) -> int:
        return len(self.images)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """Return a batch of the same shape mixing ``images`` with stored ones; store the new ones."""
        if self.pool_size == 0:
            return images
        if self.images and self.images[0].device != images.device:  # restored from a checkpoint onto the CPU
            self.images = [img.to(images.device) for img in self.images]
        out = []
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(self.images) < self.pool_size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand((), generator=self.generator).item() > 0.5:
                idx = int(torch.randint(len(self.images), (), generator=self.generator).item())
                out.append(self.images[idx].clone())
                self.images[idx] = image.clone()
            else:
                out.append(image)
        return torch.cat(out, 0)

    def state_dict(self) -> dict:
        """Stored images (on CPU) and the generator state; plain tensors, so ``weights_only`` loads accept it."""
        return {
            "pool_size": self.pool_size,
            "images": [img.cpu() for img in self.images],
            "rng_state": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore images (moved to the fakes' device at the next ``query``) and the random state."""
        if state["pool_size"] != self.pool_size:
            raise ValueError(f"checkpoint pool holds size {state['pool_size']}, this pool has {self.pool_size}")
        self.images = list(state["images"])
        self.generator.set_state(state["rng_state"])
