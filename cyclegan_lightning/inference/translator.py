"""Translate images from Python: load a checkpoint once, then translate PIL images, tensors or files.

    from cyclegan_lightning.inference import Translator
    translator = Translator.from_checkpoint("outputs/demo/runs/.../checkpoints/last.ckpt")
    translator = Translator.from_pretrained("exported/folder")        # or a hub repo id (huggingface_hub installed)
    zebra = translator(Image.open("horse.jpg"))              # PIL in, PIL out, same size (alpha kept)
    batch = translator.translate_tensor(x, "b2a")            # (N, C, H, W) in [0, 1] -> same shape in [0, 1]

Backends (``backend=``) run the same padded generator (``export.PaddedGenerator``): ``eager`` (PyTorch),
``compile`` (``torch.compile``, inductor; compiles once per image shape, then reuses; on a CPU in fp32 it compiles
the fastconv graph with frozen weights, the fastest steady state measured, after about a minute of compilation per
image size on the first run, seconds once inductor's on-disk cache holds it), ``onnxruntime`` (the ONNX
export run by ONNX Runtime; fp32 on CPU; optional extra ``onnx``), ``fastconv`` (eager PyTorch with the residual
blocks' 3x3 convolutions done by Winograd's F(4x4, 3x3) and the last few-channel convolution as one matrix product,
``inference.fastconv``; fp32 on CPU). ``auto``: fastconv on a CPU in fp32 (the fastest measured there,
docs/performance.md), else eager. Tiled images always run eagerly: their
shared instance-norm statistics are swapped into the PyTorch modules.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from cyclegan_lightning.checkpoints.generators import LoadedGenerators, load_generators
from cyclegan_lightning.checkpoints.pretrained_folder import download_pretrained, upload_pretrained
from cyclegan_lightning.data.images import LoadedImage, load_image, loaded_from_pil, match_channels, to_pil
from cyclegan_lightning.errors import ConfigError
from cyclegan_lightning.hardware import warn_if_emulated_bf16
from cyclegan_lightning.image_range import from_unit, to_unit
from cyclegan_lightning.inference.export import PaddedGenerator, export_onnx, export_pretrained, onnx_session
from cyclegan_lightning.inference.fastconv import accelerate
from cyclegan_lightning.inference.tiling import measure_norm_stats, translate_tiled
from cyclegan_lightning.networks.padding import min_side, pad_to_multiple, size_multiple

log = logging.getLogger(__name__)

PRECISIONS = {"32": None, "fp32": None, "bf16": torch.bfloat16, "16": torch.float16, "fp16": torch.float16}
BACKENDS = ("auto", "eager", "compile", "onnxruntime", "fastconv")
CPU_FP32_BACKENDS = ("onnxruntime", "fastconv")
# backend=auto compiles for a run with this many pixels of one image size (about 900 images of 256x256): compiling
# takes ~80 s the first time and saves ~0.09 s per 256x256 image against fastconv (docs/performance.md)
COMPILE_PAYS_OFF_PIXELS = 60_000_000
HUB_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")  # owner/name, as the hub spells repositories


class FrozenCompiled:
    """``module`` compiled by inductor with its weights frozen into the graph (constant folding, pointwise code fused
    around the convolutions), compiled on the first call of each input shape. oneDNN weight prepacking stays off:
    prepacked weights cannot be pickled, which would bypass inductor's on-disk cache, and the steady speed is the
    same without it (docs/performance.md). Freezing is an inductor setting read while compiling, and a new shape
    compiles inside a call, so the setting is patched around every call."""

    def __init__(self, module: nn.Module, fallback: bool = False):  # fallback: run ``module`` if compiling fails
        self.module = module
        self.compiled = torch.compile(module, dynamic=False)
        self.fallback = fallback

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import torch._inductor.config as inductor_config

        try:
            with inductor_config.patch({"freezing": True, "cpp.weight_prepack": False}):
                return self.compiled(x)
        except torch._dynamo.exc.BackendCompilerFailed as exc:  # e.g. no working C++ compiler for inductor
            inner = exc.inner_exception
            why = f"{type(inner).__name__}: {(str(inner).strip().splitlines() or ['no message'])[0]}"
            if not self.fallback:
                raise ConfigError(
                    f"translator.backend=compile could not compile the generator ({why}). Inductor needs a working "
                    "C++ compiler on the CPU; use translator.backend=fastconv (no compilation)."
                ) from exc
            log.warning("torch.compile failed (%s): translating with fastconv instead", why)
            self.compiled = self.module
            return self.module(x)


def auto_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto``: the first CUDA GPU, else Apple's MPS, else the CPU."""
    if device not in (None, "auto"):
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


class Translator:
    """Generators loaded once, in eval mode, on one device; translate images in either direction.

    ``tile_size``: images whose longer side exceeds it are translated tile by tile with ``tile_overlap`` pixels of
    overlap (bounded memory); ``None`` never tiles. ``precision``: ``32`` | ``bf16`` | ``16`` autocast.
    """

    def __init__(
        self,
        loaded: LoadedGenerators,
        device: str | torch.device | None = "auto",  # auto | cpu | cuda | cuda:1 | mps
        precision: str = "32",  # 32 | bf16 | 16: autocast dtype of the convolutions
        tile_size: int | None = 1024,  # tile images with a side above this (None: never)
        tile_overlap: int = 128,  # pixels shared by neighbouring tiles, blended
        tile_batch_size: int = 1,  # tiles run per forward
        stats_size: int = 1024,  # tiled images up to this side get exact instance-norm statistics
        backend: str = "auto",  # auto | eager | compile | onnxruntime | fastconv (see the module docstring)
    ):
        if str(precision) not in PRECISIONS:
            raise ConfigError(f"precision must be one of {tuple(PRECISIONS)}, got {precision!r}")
        self.loaded = loaded
        self.device = auto_device(device)
        self.dtype = PRECISIONS[str(precision)]
        warn_if_emulated_bf16(precision, self.device.type)
        self.requested_backend = backend
        self.backend = self._choose_backend(backend)
        self._runners: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
        self.tile_size, self.tile_overlap, self.tile_batch_size = tile_size, tile_overlap, tile_batch_size
        self.stats_size = stats_size
        self.generators: dict[str, nn.Module] = {d: g.to(self.device).eval() for d, g in loaded.generators.items()}
        for gen in self.generators.values():
            gen.requires_grad_(False)

    def _choose_backend(self, backend: str) -> str:
        if backend not in BACKENDS:
            raise ConfigError(f"translator.backend must be one of {BACKENDS}, got {backend!r}")
        fp32_cpu = self._fp32_cpu
        if backend == "auto":
            backend, why = (
                ("fastconv", "fastest without start-up on CPU in fp32") if fp32_cpu else ("eager", "not CPU fp32")
            )
            log.info("translator.backend=auto: %s (%s)", backend, why)
        elif backend in CPU_FP32_BACKENDS and not fp32_cpu:
            raise ConfigError(
                f"translator.backend={backend} runs fp32 on the CPU only (asked: device={self.device}, precision "
                f"{self.dtype}). Use translator.device=cpu translator.precision=32, or translator.backend=eager."
            )
        return backend

    def compile_if_it_pays(self, images_per_size: dict[tuple[int, int], int]) -> bool:
        """With ``backend=auto`` on a CPU in fp32: switch from fastconv to ``compile`` when one image size has at
        least ``COMPILE_PAYS_OFF_PIXELS`` pixels to translate, i.e. when the faster steady speed repays a first-run
        compilation (about a minute per size) on the machine measured in docs/performance.md. Returns whether it
        switched. A failed compilation then falls back to fastconv with a warning."""
        if not self.may_switch_to_compile:
            return False
        (h, w), n = max(images_per_size.items(), key=lambda kv: kv[0][0] * kv[0][1] * kv[1], default=((0, 0), 0))
        if h * w * n < COMPILE_PAYS_OFF_PIXELS:
            return False
        log.info(
            "translator.backend=auto: compile (%d images of %dx%d: a one-off compilation, about a minute per image "
            "size on a first run, is repaid by the faster steady speed; translator.backend=fastconv avoids it)",
            n,
            w,
            h,
        )
        self.backend = "compile"
        return True

    @property
    def may_switch_to_compile(self) -> bool:
        """``backend=auto`` resolved to fastconv and nothing translated yet: ``compile_if_it_pays`` may switch."""
        return self.requested_backend == "auto" and self.backend == "fastconv" and not self._runners

    @property
    def _fp32_cpu(self) -> bool:
        return self.device.type == "cpu" and self.dtype is None

    def _runner(self, direction: str) -> Callable[[torch.Tensor], torch.Tensor]:
        """The padded generator of ``direction`` on this backend, built on first use (compile: traced per shape)."""
        if direction not in self._runners:
            gen = self.generator(direction)
            padded = PaddedGenerator(gen).eval()
            if self.backend == "compile" and self._fp32_cpu:
                fallback = self.requested_backend == "auto"
                self._runners[direction] = FrozenCompiled(PaddedGenerator(accelerate(gen)).eval(), fallback)
            elif self.backend == "compile":
                self._runners[direction] = torch.compile(padded, dynamic=False)
            elif self.backend == "onnxruntime":
                example = torch.zeros(1, self.channels_in(direction), *(2 * [min_side(gen)]))
                session = onnx_session(export_onnx(gen, io.BytesIO(), example).getvalue())

                def run(x: torch.Tensor, session=session) -> torch.Tensor:
                    return torch.from_numpy(session.run(None, {"image": x.contiguous().numpy()})[0])

                self._runners[direction] = run
            elif self.backend == "fastconv":
                self._runners[direction] = PaddedGenerator(accelerate(gen)).eval()
            else:
                self._runners[direction] = padded
        return self._runners[direction]

    def prepare(self, directions: list[str]) -> None:
        """Build the runners of ``directions`` now: threads that share this translator then only read it."""
        for direction in dict.fromkeys(directions):
            self._runner(direction)

    @classmethod
    def from_checkpoint(cls, path: str | Path, arch: str = "auto", norm: str | None = None, **kwargs) -> Translator:
        """Load a train.py ``.ckpt``, a reference ``*_net_G*.pth`` or a hub-layout folder (``load_generators``)."""
        return cls(load_generators(path, arch=arch, norm=norm), **kwargs)

    @classmethod
    def from_pretrained(cls, folder_or_repo_id: str | Path, revision: str | None = None, **kwargs) -> Translator:
        """Load a folder in the Hugging Face hub layout (``export.py format=hf``, ``save_pretrained``), or, when no
        such local path exists, the hub repository of that id through ``huggingface_hub`` (the extra ``hub``; its
        cached copy only under ``CYCLEGAN_OFFLINE=1``). ``kwargs``: this class's options (device, precision ...)."""
        path = Path(folder_or_repo_id)
        if not path.exists() and HUB_REPO_ID.fullmatch(str(folder_or_repo_id)):
            from cyclegan_lightning.downloads import offline

            path = download_pretrained(str(folder_or_repo_id), revision, offline=offline())
        return cls(load_generators(path), **kwargs)

    def save_pretrained(self, folder: str | Path, license: str = "other") -> Path:
        """Write the generators this translator runs (the EMA ones where it loaded those) to ``folder`` in the
        Hugging Face hub layout: config.json, model.safetensors and a model card (``inference.export``)."""
        return export_pretrained(self.loaded, folder, license)

    def push_to_hub(self, repo_id: str, private: bool = False, license: str = "other", message: str | None = None):
        """``save_pretrained`` into a temporary folder and upload it to the hub repository ``repo_id`` (created if
        needed; needs huggingface_hub and a login). Returns the commit's URL."""
        with tempfile.TemporaryDirectory() as tmp:
            folder = self.save_pretrained(Path(tmp) / "model", license)
            return upload_pretrained(folder, repo_id, private, message)

    @property
    def directions(self) -> tuple[str, ...]:
        return tuple(self.generators)

    def channels_in(self, direction: str) -> int:
        return self.loaded.channels[direction[0]]

    def generator(self, direction: str) -> nn.Module:
        """The eval-mode generator of ``direction`` on this translator's device; a ``ConfigError`` naming the
        directions the checkpoint has when it lacks this one."""
        if direction not in self.generators:
            have = ", ".join(self.generators)
            raise ConfigError(
                f"direction={direction}: {self.loaded.path.name} has no {direction} generator (it has: {have}). "
                f"Use direction={have.split(', ')[0]}"
                + (
                    ", or give the *_net_G_B.pth beside *_net_G_A.pth for b2a."
                    if self.loaded.source == "reference"
                    else "."
                )
            )
        return self.generators[direction]

    def _autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    # ---- tensors -------------------------------------------------------------------------------------------------
    def _model_input(self, x: torch.Tensor, direction: str) -> torch.Tensor:
        """(N, C, H, W) in [0, 1] -> the generator's channels, on its device, in [-1, 1]."""
        want = self.channels_in(direction)
        if x.shape[1] != want:
            if x.shape[1] not in (1, 3):
                raise ConfigError(f"the {direction} generator takes {want}-channel images, got {x.shape[1]} channels")
            x = match_channels(x, want)
        return from_unit(x.to(self.device, torch.float32))

    @torch.inference_mode()
    def translate_tensor(
        self, x: torch.Tensor, direction: str = "a2b", norm_stats: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    ) -> torch.Tensor:
        """(C, H, W) or (N, C, H, W) in [0, 1] -> the translation, same layout and size, in [0, 1], float32, on the
        input's device. Large images (either side over ``tile_size``) are tiled one image at a time. ``norm_stats``
        (from ``measure_norm_stats``): every image is normalised with these instance-norm statistics instead of its
        own, as tiles share them (video frames: no flicker); runs eagerly, one image at a time."""
        gen = self.generator(direction)
        single = x.dim() == 3
        x_in = self._model_input(x[None] if single else x, direction)
        with self._autocast():
            tiled = bool(self.tile_size) and max(x_in.shape[-2:]) > self.tile_size
            if tiled or norm_stats is not None:
                tile = self.tile_size if tiled else 1 << 30  # fixed statistics on an image that fits: one tile
                out = torch.cat(
                    [
                        translate_tiled(
                            gen,
                            img[None],
                            tile,
                            self.tile_overlap,
                            self.tile_batch_size,
                            self.stats_size,
                            stats=norm_stats,
                        )
                        for img in x_in
                    ]
                )
            else:
                out = self._runner(direction)(x_in)
        out = to_unit(out).to(x.device)
        return out[0] if single else out

    @torch.inference_mode()
    def measure_norm_stats(
        self, images: torch.Tensor, direction: str = "a2b"
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Instance-norm statistics of ``direction``'s generator pooled over ``images`` (N, C, H, W) in [0, 1], as
        ``translate_tensor(norm_stats=)`` takes them (``tiling.measure_norm_stats``, one image at a time)."""
        gen = self.generator(direction)
        xp = pad_to_multiple(self._model_input(images, direction), size_multiple(gen), min_side(gen))
        with self._autocast():
            return measure_norm_stats(gen, xp, self.tile_size or max(xp.shape[-2:]), self.stats_size)

    # ---- images --------------------------------------------------------------------------------------------------
    def translate_loaded(self, images: list[LoadedImage], direction: str = "a2b") -> list[LoadedImage]:
        """Translate decoded images (same size ones in one batch); each keeps its alpha channel."""
        outs: list[LoadedImage] = []
        i = 0
        while i < len(images):
            j = i + 1
            while j < len(images) and images[j].image.shape == images[i].image.shape:
                j += 1
            result = self.translate_tensor(torch.stack([im.image for im in images[i:j]]), direction)
            outs += [LoadedImage(r, im.alpha) for r, im in zip(result, images[i:j])]
            i = j
        return outs

    def __call__(self, image: Image.Image | torch.Tensor, direction: str = "a2b") -> Image.Image | torch.Tensor:
        """PIL image -> PIL image (mode L/RGB, LA/RGBA if it had transparency); tensor -> ``translate_tensor``."""
        if isinstance(image, torch.Tensor):
            return self.translate_tensor(image, direction)
        loaded = loaded_from_pil(image, self.channels_in(direction))
        return to_pil(self.translate_loaded([loaded], direction)[0])

    def translate_file(self, path: str | Path, direction: str = "a2b") -> LoadedImage:
        return self.translate_loaded([load_image(path, self.channels_in(direction))], direction)[0]


def build_translator(ckpt_path: str | Path, options) -> Translator:
    """A Translator from a ``conf/translator`` node: its keys are ``from_checkpoint``'s and ``__init__``'s arguments,
    whose signatures hold the defaults (the YAML repeats them so that each can be overridden by name)."""
    return Translator.from_checkpoint(ckpt_path, **dict(options))
