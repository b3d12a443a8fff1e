"""Find out what a checkpoint holds and build the generator(s) it describes.

Three kinds are accepted, none running pickled code (``torch.load(weights_only=True)``, safetensors), all loaded
with ``strict=True`` (no silently random layer):

- a Lightning ``.ckpt`` written by our training: both generators, their config in ``hyper_parameters``; when
  the run kept an EMA of the generator weights (``model.ema_decay``), those averaged weights are loaded (and
  ``describe()`` says ``weights=ema``), unless ``use_ema=False``;
- a bare generator ``state_dict`` of the reference implementation (``<epoch>_net_G_A.pth`` = A to B,
  ``<epoch>_net_G_B.pth`` = B to A, pretrained ``latest_net_G.pth``): ResNet (any block count, with or without
  dropout) or U-Net, architecture read from the key layout and tensor shapes. Next to a ``*_net_G_A.pth`` the
  matching ``*_net_G_B.pth`` is picked up too, so both directions are available. The official CUT code's
  anti-aliased layout (``filt`` buffers of its blur layers) is recognised too;
- a folder in the Hugging Face hub layout (``config.json`` + ``model.safetensors``, ``checkpoints.pretrained_folder``)
  written by ``export.py format=hf`` or ``Translator.save_pretrained``.

Anything else (a discriminator, a U-Net where a ResNet was asked for, a truncated download) raises
``CheckpointError`` saying what the file is and what to give instead; never a dump of mismatched keys.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import torch
from torch import nn

from cyclegan_lightning.checkpoints.format import check_format, ema_state_prefix, state_mismatch, strip_compiled_prefix
from cyclegan_lightning.checkpoints.loading import safe_load
from cyclegan_lightning.checkpoints.pretrained_folder import is_pretrained_folder, read_pretrained_folder
from cyclegan_lightning.directions import ENDPOINTS
from cyclegan_lightning.downloads.pretrained import resolve_pretrained
from cyclegan_lightning.errors import CheckpointError
from cyclegan_lightning.networks import ResnetGenerator, UnetGenerator

log = logging.getLogger(__name__)
ARCHS = ("auto", "resnet", "unet")
ALLOWED_TARGET_PREFIX = "cyclegan_lightning.networks."  # a .ckpt may only build our own network classes


@dataclass
class LoadedGenerators:
    """Generators by direction (``a2b``/``b2a``), in eval mode, with what we know of their domains."""

    generators: dict[str, nn.Module]
    channels: dict[str, int]  # channels of domain "a" and "b"
    source: str  # "lightning", "reference" or "pretrained" (a hub-layout folder)
    path: Path
    info: dict = field(default_factory=dict)  # architecture details, for logs and reports
    specs: dict[str, dict] = field(default_factory=dict)  # per direction: {_target_, every constructor argument}
    training: dict = field(default_factory=dict)  # what the checkpoint says of its run: recipe, data, epochs, scores

    def describe(self) -> str:
        arch = ", ".join(f"{k}={v}" for k, v in self.info.items())
        return f"{self.path.name} ({self.source} checkpoint; {'/'.join(self.generators)}; {arch})"


def _read(path: Path) -> object:
    """torch.load with weights_only=True, turning every failure into a CheckpointError naming the file."""
    if not path.exists():
        raise CheckpointError(
            f"checkpoint {path}: no such file. Give ckpt_path=<a .ckpt from train.py or a *_net_G*.pth>."
        )
    if path.is_dir():
        raise CheckpointError(
            f"checkpoint {path} is a folder but not a model folder (no config.json, model.safetensors). Give a "
            "file (checkpoints/last.ckpt, latest_net_G_A.pth) or a folder written by export.py format=hf."
        )
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes). Copy or download it again.")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic[:2] != b"PK" and magic[:1] != b"\x80":  # torch.save writes a zip (PK..) or, legacy, a pickle (0x80)
        raise CheckpointError(
            f"checkpoint {path} is not a PyTorch file (it starts with {magic!r}). Give a .ckpt from train.py or a "
            "reference *_net_G*.pth."
        )
    return safe_load(path)  # weights_only=True; its errors name the file and the reason


def _tensor_dict(obj: object) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def load_generators(
    path: str | Path, arch: str = "auto", norm: str | None = None, use_ema: bool = True
) -> LoadedGenerators:
    """Load every generator ``path`` holds. ``arch`` (resnet | unet) insists on an architecture; ``norm`` overrides
    the reference file's norm where the keys cannot tell (instance and none both have no parameters); ``use_ema``
    takes a .ckpt's EMA weights where it has them (``False``: the trained weights themselves)."""
    if arch not in ARCHS:
        raise CheckpointError(f"arch must be one of {ARCHS}, got {arch!r}")
    path = resolve_pretrained(path)  # "pretrained:<name>": the reference's published generator, fetched once
    if is_pretrained_folder(path):
        return _from_pretrained_folder(path, arch)
    obj = _read(path)
    if isinstance(obj, dict) and "state_dict" in obj and "hyper_parameters" in obj:
        return _from_lightning(path, obj, arch, use_ema)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict) and _tensor_dict(obj["state_dict"]):
        obj = obj["state_dict"]  # some tools wrap a bare state_dict one level down
    if _tensor_dict(obj):
        return _from_reference(path, obj, arch, norm)
    raise CheckpointError(
        f"checkpoint {path} is neither a Lightning .ckpt from train.py nor a generator state_dict "
        f"(found a {type(obj).__name__}). Give checkpoints/last.ckpt of a run or a reference *_net_G*.pth."
    )


# ---- Lightning checkpoints of our training --------------------------------------------------------------------
def _from_lightning(path: Path, ckpt: dict, arch: str, use_ema: bool = True) -> LoadedGenerators:
    check_format(ckpt, f"checkpoint {path}")
    hp = ckpt["hyper_parameters"]
    spec = hp.get("generator")
    if not isinstance(spec, dict) or not str(spec.get("_target_", "")).startswith(ALLOWED_TARGET_PREFIX):
        raise CheckpointError(
            f"checkpoint {path} is a Lightning checkpoint but not of a cyclegan_lightning model "
            "(no generator spec in its hyper_parameters). Give a .ckpt written by train.py."
        )
    _check_arch(path, "unet" if "Unet" in spec["_target_"] else "resnet", arch)
    channels = {"a": int(hp.get("channels_a", 3)), "b": int(hp.get("channels_b", 3))}
    state = strip_compiled_prefix(ckpt["state_dict"])
    gens, weights, specs = {}, {}, {}
    for direction, (src, dst) in ENDPOINTS.items():
        prefix = f"gen_{direction}."
        averaged = state.get(ema_state_prefix(direction).replace(".module.", ".n_averaged"))
        if use_ema and averaged is not None and int(averaged) > 0:  # an EMA that was updated at least once
            prefix, weights[direction] = ema_state_prefix(direction), "ema"
        sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if not sub:
            continue  # a one-way model (CUT) has no B->A generator
        specs[direction] = {**spec, "input_nc": channels[src], "output_nc": channels[dst]}
        net = hydra.utils.instantiate(specs[direction])
        _load_strict(path, net, sub, f"generator {direction}")
        gens[direction] = net.eval()
    if not gens:
        raise CheckpointError(f"checkpoint {path} holds no generator weights (gen_a2b.*, gen_b2a.*).")
    info = {k: v for k, v in spec.items() if k != "_target_"} | {"arch": spec["_target_"].rsplit(".", 1)[-1]}
    if weights:
        info["weights"] = "ema"
        log.info("%s: using the EMA of the generator weights (%s)", path.name, "/".join(weights))
    return LoadedGenerators(gens, channels, "lightning", path, info, specs, _run_facts(ckpt))


def _run_facts(ckpt: dict) -> dict:
    """What a .ckpt records of its run, plain (JSON-ready): the model class and its hyper-parameters (the recipe),
    the data module's, the epochs done, the optimizer steps (``global_step``: a GAN steps two or three optimizers per
    batch) and the score the checkpoint callback monitored."""
    facts = {
        "model": (ckpt.get("cyclegan_lightning") or {}).get("model"),
        "epochs": int(ckpt["epoch"]) + 1 if isinstance(ckpt.get("epoch"), int) else None,
        "global_step": ckpt.get("global_step"),
        "hyper_parameters": ckpt.get("hyper_parameters") or {},
        "data": ckpt.get("datamodule_hyper_parameters") or {},
    }
    for name, state in (ckpt.get("callbacks") or {}).items():
        if name.startswith("ModelCheckpoint") and isinstance(state, dict) and state.get("monitor"):
            score = state.get("best_model_score")
            facts["monitor"] = state["monitor"]
            facts["best_score"] = float(score) if score is not None else None
            break
    return facts


# ---- bare state_dicts of the reference implementation ----------------------------------------------------------
def _looks_like_discriminator(state: dict) -> bool:
    convs = [k for k in state if re.fullmatch(r"(model|net)\.\d+\.weight", k) and state[k].dim() == 4]
    if not convs:
        return False
    last = state[max(convs, key=lambda k: int(k.split(".")[1]))]
    return last.shape[0] == 1 and last.shape[-1] in (1, 4) and not any("conv_block" in k for k in state)


def _norm_from_bias(keys: set[str], first_conv_bias: str) -> str:
    """Instance norm and no norm both lack parameters; the reference gives convs a bias only under instance norm."""
    return "instance" if first_conv_bias in keys else "none"


def _detect_reference(path: Path, state: dict, norm: str | None) -> tuple[str, dict]:
    """(architecture, constructor kwargs) from the key layout and shapes of a reference generator state_dict."""
    keys = set(state)
    if _looks_like_discriminator(state):
        raise CheckpointError(
            f"checkpoint {path} is a discriminator (PatchGAN keys model.0 ... with a 1-channel output), not a "
            "generator. Give the generator file of the same run: *_net_G_A.pth (A to B) or *_net_G_B.pth (B to A)."
        )
    # batch norm has an affine weight next to its running stats; old InstanceNorm files have the stats alone
    has_bn = any(k.endswith(".running_mean") and k[: -len("running_mean")] + "weight" in keys for k in keys)
    if "model.1.weight" in keys and any(".conv_block." in k for k in keys):  # ResNet: one Sequential
        stem = state["model.1.weight"]
        blocks = sorted({int(m.group(1)) for k in keys if (m := re.match(r"model\.(\d+)\.conv_block\.", k))})
        convs = sorted(int(m.group(1)) for k in keys if (m := re.fullmatch(r"model\.(\d+)\.weight", k)))
        last = state[f"model.{convs[-1]}.weight"]
        # the two convs of the first residual block sit at 1 and 5 with pad layers (reflect/replicate), 1 and 6
        # with dropout; zero padding has no pad layers: 0 and 3, or 0 and 4 with dropout
        block_convs = (
            sorted(
                int(m.group(1))
                for k in keys
                if (m := re.fullmatch(rf"model\.{blocks[0]}\.conv_block\.(\d+)\.weight", k)) and state[k].dim() == 4
            )
            if blocks
            else [1, 5]
        )
        first, second = block_convs[0], block_convs[-1]
        kwargs = dict(
            input_nc=stem.shape[1],
            output_nc=last.shape[0],
            ngf=stem.shape[0],
            n_blocks=len(blocks),
            norm="batch" if has_bn else (norm or _norm_from_bias(keys, "model.1.bias")),
            use_dropout=second - first == (5 if first == 1 else 4),
            padding_type="reflect" if first == 1 else "zero",
        )
        # the official CUT code's anti-aliased layout: its blur layers keep a `filt` buffer, 3x3 down, 4x4 up
        blurs = {state[k].shape[-1] for k in keys if re.fullmatch(r"model\.\d+\.filt", k)}
        kwargs |= {
            "downsample": "antialias" if 3 in blurs else "stride",
            "upsample": "antialias" if 4 in blurs else "transpose",
        }
        return "resnet", kwargs
    if "model.model.0.weight" in keys:  # U-Net: nested skip blocks, one "model" level per downsampling
        stem = state["model.model.0.weight"]
        last = state["model.model.3.weight"] if "model.model.3.weight" in keys else None
        depth = max(k.split(".").count("model") for k in keys) - 1
        kwargs = dict(
            input_nc=stem.shape[1],
            output_nc=last.shape[1] if last is not None else 3,
            ngf=stem.shape[0],
            num_downs=depth,
            norm="batch" if has_bn else (norm or _norm_from_bias(keys, "model.model.0.bias")),
        )
        return "unet", kwargs
    sample = ", ".join(sorted(keys)[:3])
    raise CheckpointError(
        f"checkpoint {path} is not a CycleGAN/pix2pix generator state_dict (first keys: {sample}, ...). "
        "Give a reference *_net_G*.pth or a .ckpt from train.py."
    )


def _from_reference(path: Path, state: dict, arch: str, norm: str | None) -> LoadedGenerators:
    files = {"a2b": path}
    m = re.fullmatch(r"(.*)net_G_A\.pth", path.name)
    if m and (path.parent / f"{m.group(1)}net_G_B.pth").is_file():
        files["b2a"] = path.parent / f"{m.group(1)}net_G_B.pth"
    elif re.fullmatch(r".*net_G_B\.pth", path.name):
        files = {"b2a": path}
    gens, info, specs = {}, {}, {}
    for direction, file in files.items():
        file_state = state if file == path else _read(file)
        if not _tensor_dict(file_state):
            raise CheckpointError(f"checkpoint {file} is not a generator state_dict. Give a reference *_net_G*.pth.")
        detected, kwargs = _detect_reference(file, file_state, norm)
        _check_arch(file, detected, arch)
        cls = ResnetGenerator if detected == "resnet" else UnetGenerator
        specs[direction] = {"_target_": f"{cls.__module__.rsplit('.', 1)[0]}.{cls.__name__}", **kwargs}
        net = cls(**kwargs)
        if (
            kwargs["norm"] == "instance"
        ):  # pre-0.4 PyTorch saved running stats for InstanceNorm; the reference drops them
            file_state = {
                k: v for k, v in file_state.items() if not re.search(r"running_(mean|var)$|num_batches_tracked$", k)
            }
        _load_strict(file, net, file_state, f"{detected} generator")
        gens[direction] = net.eval()
        info = info or {"arch": detected} | {k: v for k, v in kwargs.items() if k not in ("input_nc", "output_nc")}
    first = next(iter(gens.values()))
    in_nc, out_nc = _channels_of(first)
    channels = {"a": in_nc, "b": out_nc} if "a2b" in gens else {"a": out_nc, "b": in_nc}
    return LoadedGenerators(gens, channels, "reference", path, info, specs)


# ---- folders in the Hugging Face hub layout (config.json + model.safetensors) ----------------------------------
def _from_pretrained_folder(path: Path, arch: str) -> LoadedGenerators:
    config, states = read_pretrained_folder(path)
    gens, specs = {}, {}
    for direction, spec in config["generators"].items():
        if not str(spec.get("_target_", "")).startswith(ALLOWED_TARGET_PREFIX):
            raise CheckpointError(
                f"model folder {path}: config.json builds {spec.get('_target_')!r}, not a cyclegan_lightning network "
                "(refused: a model folder may only build our own classes). Export the model again."
            )
        _check_arch(path, "unet" if "Unet" in spec["_target_"] else "resnet", arch)
        net = hydra.utils.instantiate(spec)
        _load_strict(path / "model.safetensors", net, states[direction], f"generator {direction}")
        gens[direction], specs[direction] = net.eval(), dict(spec)
    first = next(iter(specs.values()))
    info = {k: v for k, v in first.items() if k not in ("_target_", "input_nc", "output_nc")}
    info |= {"arch": first["_target_"].rsplit(".", 1)[-1]}
    if config.get("weights") == "ema":
        info["weights"] = "ema"
    channels = {}
    for direction, spec in specs.items():
        channels[direction[0]], channels[direction[2]] = int(spec.get("input_nc", 3)), int(spec.get("output_nc", 3))
    return LoadedGenerators(gens, channels, "pretrained", path, info, specs, dict(config.get("training") or {}))


def _channels_of(net: nn.Module) -> tuple[int, int]:
    convs = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    first, last = convs[0], convs[-1]
    out = last.weight.shape[1] if isinstance(last, nn.ConvTranspose2d) else last.weight.shape[0]
    return first.weight.shape[1], out


def _check_arch(path: Path, detected: str, wanted: str) -> None:
    if wanted != "auto" and wanted != detected:
        names = {"resnet": "a ResNet (CycleGAN) generator", "unet": "a U-Net (pix2pix) generator"}
        raise CheckpointError(
            f"checkpoint {path} holds {names[detected]}, but arch={wanted} was asked for. "
            f"Set arch=auto (or arch={detected}) to load it as it is."
        )


def _load_strict(path: Path, net: nn.Module, state: dict, what: str) -> None:
    """load_state_dict(strict=True) with a short diagnosis instead of PyTorch's full key listing."""
    parts = state_mismatch(net.state_dict(), state)
    if parts:
        raise CheckpointError(
            f"checkpoint {path} does not fit the {what} it describes: {'; '.join(parts)}. "
            "The file is probably of another architecture or damaged; give the generator file saved with this one."
        )
    net.load_state_dict(state, strict=True)
