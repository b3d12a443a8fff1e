"""One source of truth for defaults: the constructor's signature. The YAML of each config group repeats every
argument (so each can be overridden by name on the command line) with the signature's value; this test fails when
the two drift apart, when a YAML key is not an argument (a typo), or when an argument cannot be overridden."""

from __future__ import annotations

import inspect
import shutil
from pathlib import Path

import hydra
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

CONF = Path(__file__).resolve().parents[1] / "conf"
META = {"_target_", "_recursive_", "_convert_", "_partial_", "defaults"}
SUPPLIED = {"loaded", "path", "input_nc", "output_nc"}  # filled in by the code that builds the object, not the YAML

# (config file, the class or function its keys mirror when it has no _target_, keys that are the preset's reason to
# exist and so differ on purpose)
FILES = [
    ("model/cyclegan.yaml", None, set()),
    ("model/cut.yaml", None, set()),
    ("data/unpaired.yaml", None, set()),
    ("translator/default.yaml", "cyclegan_lightning.inference.Translator", set()),
    ("model/generator/resnet_9blocks.yaml", None, set()),
    ("model/generator/resnet_6blocks.yaml", None, {"n_blocks"}),
    ("model/generator/unet_64.yaml", None, {"num_downs"}),
    ("model/generator/unet_128.yaml", None, {"num_downs"}),
    ("model/generator/unet_256.yaml", None, {"num_downs"}),
    ("model/discriminator/basic.yaml", None, set()),
    ("model/discriminator/pixel.yaml", None, set()),
]
CALLBACK_FILES = sorted(p.relative_to(CONF).as_posix() for p in (CONF / "callbacks").glob("*.yaml"))


def signature_defaults(target) -> dict[str, object]:
    """Every keyword argument of ``target`` (a class: ``__init__``, plus ``from_checkpoint`` when it has one)."""
    functions = [target.__init__, getattr(target, "from_checkpoint", None)] if inspect.isclass(target) else [target]
    found = {}
    for fn in filter(None, functions):
        for name, p in inspect.signature(fn).parameters.items():
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name not in ("self", "cls"):
                found[name] = p.default
    return found


def normalise(value):
    return list(value) if isinstance(value, tuple) else value


def compare(node: dict, target, deliberate: set[str], where: str, complete: bool) -> list[str]:
    defaults = signature_defaults(hydra.utils.get_object(target) if isinstance(target, str) else target)
    problems = []
    for key, value in node.items():
        if key in META:
            continue
        if key not in defaults:
            problems.append(f"{where}: {key} is not an argument of {target}")
        elif isinstance(value, str) and "${" in value or key in deliberate or isinstance(value, dict):
            continue  # interpolated from elsewhere, a preset's defining key, or a nested network spec
        elif defaults[key] is inspect.Parameter.empty:
            continue  # required argument: the YAML gives it
        elif normalise(value) != normalise(defaults[key]):
            problems.append(f"{where}: {key}={value!r} but the signature says {defaults[key]!r}")
    if complete:
        groups = {next(iter(d)) for d in node.get("defaults", []) if isinstance(d, dict)}
        missing = [k for k in defaults if k not in node and k not in groups and k not in SUPPLIED]
        problems += [f"{where}: argument {k} is missing, so it cannot be overridden by name" for k in missing]
    return problems


def composed(file: str, conf: Path = CONF) -> dict:
    """The file over the configs its defaults list merges into its own package (``group@_here_: option``, as the
    model families take ``shared/training.yaml``), as Hydra composes them."""
    node = OmegaConf.load(conf / file)
    merged = OmegaConf.create()
    for entry in node.get("defaults", []):
        if isinstance(entry, DictConfig):
            ((key, option),) = entry.items()
            if key.endswith("@_here_"):
                group = conf / Path(file).parent / key.removesuffix("@_here_")
                merged = OmegaConf.merge(merged, OmegaConf.load(group / f"{option}.yaml"))
    return OmegaConf.to_container(OmegaConf.merge(merged, node))


@pytest.mark.parametrize(("file", "target", "deliberate"), FILES, ids=[f for f, _, _ in FILES])
def test_group_yaml_repeats_the_signature_defaults(file, target, deliberate):
    node = composed(file)
    problems = compare(node, target or node["_target_"], deliberate, file, complete=True)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("file", CALLBACK_FILES)
def test_callback_yaml_agrees_with_our_callbacks(file):
    node = OmegaConf.to_container(OmegaConf.load(CONF / file))
    problems = []
    for name, entry in node.items():
        if isinstance(entry, dict) and str(entry.get("_target_", "")).startswith("cyclegan_lightning."):
            problems += compare(entry, entry["_target_"], set(), f"{file}:{name}", complete=False)
    assert not problems, "\n".join(problems)


def test_the_check_catches_a_drifted_default():
    node = {"_target_": "cyclegan_lightning.models.CycleGAN", "lambda_cycle": 5.0, "lamda_gp": 1.0}
    problems = compare(node, node["_target_"], set(), "x.yaml", complete=False)
    assert any("lambda_cycle=5.0" in p for p in problems) and any("lamda_gp is not an argument" in p for p in problems)


def test_a_shared_knob_has_one_home_that_reaches_every_model_family(tmp_path):
    """The knobs CycleGAN and CUT share live in conf/model/shared/training.yaml only: a value changed there reaches
    both composed models (and fastcut), and no family file restates a shared knob except to differ from it."""
    shared = OmegaConf.load(CONF / "model/shared/training.yaml")
    for family in ("cyclegan", "cut"):
        own = OmegaConf.load(CONF / f"model/{family}.yaml")
        restated = [k for k in shared if k in own and own[k] == shared[k]]
        assert not restated, f"model/{family}.yaml repeats {restated}: they belong to shared/training.yaml only"
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    edited = (
        (conf / "model/shared/training.yaml")
        .read_text()
        .replace("accumulate_grad_batches: 1", "accumulate_grad_batches: 7")
    )
    (conf / "model/shared/training.yaml").write_text(edited)
    with initialize_config_dir(str(conf), version_base="1.3"):
        for model in ("cyclegan", "cut", "fastcut"):
            cfg = compose("train", overrides=[f"model={model}"])
            assert cfg.model.accumulate_grad_batches == 7, model
            assert cfg.model.lr == shared.lr and cfg.model.betas == shared.betas, model


def test_model_families_share_the_defaults_of_their_shared_arguments():
    """CycleGAN and CUT repeat the shared arguments in their signatures (each config mirrors its constructor):
    those must not drift apart, except where CUT follows its paper on purpose."""
    cyclegan = signature_defaults(hydra.utils.get_class("cyclegan_lightning.models.CycleGAN"))
    cut = signature_defaults(hydra.utils.get_class("cyclegan_lightning.models.CUT"))
    papers = {"init_type", "n_epochs", "n_epochs_decay", "lambda_identity", "lambda_nce"}  # the official CUT's
    drift = [
        f"{k}: CycleGAN {cyclegan[k]!r}, CUT {cut[k]!r}"
        for k in sorted(cyclegan.keys() & cut.keys() - papers)
        if normalise(cyclegan[k]) != normalise(cut[k])
    ]
    assert not drift, drift
