"""The model card (``README.md``) of an exported model folder, filled from what its checkpoint and its run recorded.

From the checkpoint (``LoadedGenerators.training``): the model class, the recipe (its hyper-parameters), the data
settings, the epochs and optimizer steps, and the score its checkpoint callback monitored. From the run folder
around it (``<run>/checkpoints/x.ckpt``, ``run_record``): every ``val/`` metric of ``csv/metrics.csv`` at the best
and the last checkpoint's epochs, kept in config.json too, and the sample grid ``samples/latest.png``, copied beside
the card. Exporting a model folder again keeps both. The header carries the hub's metadata (``library_name``,
``tags``, ``pipeline_tag: image-to-image``, ``license``).
"""

from __future__ import annotations

from pathlib import Path

from cyclegan_lightning.checkpoints.generators import LoadedGenerators
from cyclegan_lightning.runs import checkpoint_epochs, read_metrics_by_epoch, run_of

SAMPLES_FILE = "samples.png"  # the run's samples/latest.png, beside the card
RECIPE_KEYS = (  # the hyper-parameters the card lists (config.json keeps them all)
    "gan_mode",
    "lambda_cycle",
    "lambda_identity",
    "lambda_gan",
    "lambda_nce",
    "nce_idt",
    "nce_layers",
    "lr",
    "betas",
    "lr_policy",
    "n_epochs",
    "n_epochs_decay",
    "init_type",
    "init_gain",
    "ema_decay",
    "diffaugment",
)
REFERENCE_CODE = {  # (model, repository) of a bare generator file, by whether it has the anti-aliased layout
    False: ("CycleGAN (reference implementation)", "junyanz/pytorch-CycleGAN-and-pix2pix"),
    True: ("CUT (official code)", "taesungp/contrastive-unpaired-translation"),
}
DATA_KEYS = ("root", "train_a", "train_b", "test_a", "test_b", "direction", "preprocess", "load_size", "crop_size")


def metrics_at_checkpoints(run: Path) -> dict[str, dict]:
    """``{"best" | "last": {"epoch": e, "values": {val metric: value}}}`` from the run's csv, for the checkpoints it
    has."""
    by_epoch = read_metrics_by_epoch(run, "val/")
    return {which: {"epoch": e, "values": by_epoch.get(e, {})} for which, e in checkpoint_epochs(run).items()}


def run_record(loaded: LoadedGenerators) -> tuple[dict, dict[str, Path]]:
    """(the metrics at the best and last checkpoints, ``{file name: file}`` of the sample grid): from the run
    folder of a train.py checkpoint, or as an exported folder kept them; empty where there is neither."""
    if loaded.source == "pretrained":
        grid = loaded.path / SAMPLES_FILE
        return dict(loaded.training.get("metrics") or {}), ({SAMPLES_FILE: grid} if grid.is_file() else {})
    run = run_of(loaded.path) if loaded.source == "lightning" else None
    if run is None:
        return {}, {}
    grid = run / "samples" / "latest.png"
    return metrics_at_checkpoints(run), ({SAMPLES_FILE: grid} if grid.is_file() else {})


def _value(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else f"`{v}`"


def _metrics_table(found: dict[str, dict]) -> list[str]:
    names = sorted({m for at in found.values() for m in at["values"]})
    if not names:
        return ["No validation metrics were found in the run's `csv/metrics.csv`."]
    header = " | ".join(f"{which} (epoch {at['epoch']})" for which, at in found.items())
    lines = [f"| metric | {header} |", "|---|" + "---|" * len(found)]
    for name in names:
        cells = " | ".join(_value(at["values"][name]) if name in at["values"] else "" for at in found.values())
        lines.append(f"| `{name}` | {cells} |")
    return lines


def model_card(loaded: LoadedGenerators, config: dict, images: dict[str, Path], license: str = "other") -> str:
    """The card's Markdown for ``config`` (``training.metrics`` from ``run_record``) and the ``images`` beside it."""
    training = config.get("training") or {}
    official_cut = any("antialias" in (s.get("downsample"), s.get("upsample")) for s in loaded.specs.values())
    reference = REFERENCE_CODE[official_cut]  # a bare .pth: the anti-aliased layout is the official CUT code's
    model = training.get("model") or (reference[0] if loaded.source == "reference" else "model")
    data = training.get("data") or {}
    name = Path(str(data["root"])).name if data.get("root") else loaded.path.stem
    directions = ", ".join(d.replace("2", " → ").upper() for d in loaded.generators)
    tags = ["image-to-image", "unpaired-image-translation", str(model).split(" ")[0].lower(), "pytorch", "lightning"]
    lines = [
        "---",
        "library_name: cyclegan-lightning",
        f"license: {license}",
        "pipeline_tag: image-to-image",
        "tags:",
        *[f"- {t}" for t in dict.fromkeys(tags)],
        "---",
        "",
        f"# {model}: {name}",
        "",
        f"Unpaired image-to-image translation ({directions}), "
        + (
            f"trained with {reference[1]} and converted"
            if loaded.source == "reference"
            else "trained with cyclegan-lightning and exported"
        )
        + " to the Hugging Face hub layout (`config.json`, `model.safetensors`) by cyclegan-lightning.",
        "",
        "## Model",
        "",
        "| | |",
        "|---|---|",
        f"| model | {model} |",
        f"| directions | {', '.join(loaded.generators)} |",
        f"| channels | A: {loaded.channels.get('a')}, B: {loaded.channels.get('b')} |",
        f"| weights | {config['weights']}"
        + (" (the exponential moving average the run kept)" if config["weights"] == "ema" else "")
        + " |",
    ]
    for direction, spec in loaded.specs.items():
        args = ", ".join(f"{k}={v}" for k, v in spec.items() if k != "_target_")
        lines.append(f"| generator {direction} | `{spec['_target_'].rsplit('.', 1)[-1]}({args})` |")
    lines.append(f"| source | `{loaded.path.name}` ({loaded.source} checkpoint) |")
    lines += [
        "",
        "## Usage",
        "",
        "```python",
        "from PIL import Image",
        "from cyclegan_lightning.inference import Translator",
        "",
        'translator = Translator.from_pretrained("<this folder or hub repo id>")',
        f'out = translator(Image.open("input.jpg"), "{next(iter(loaded.generators))}")  # any size; PIL in, PIL out',
        "```",
        "",
        "```bash",
        "python predict.py ckpt_path=<this folder> input=photos/ output_dir=out/",
        "```",
        "",
        'With torch.hub: `torch.hub.load(<cyclegan-lightning checkout>, "cyclegan", source="local", '
        'ckpt_path="<this folder>")` returns the same `Translator`.',
    ]
    if training:
        lines += ["", "## Training", ""]
        epochs, steps = training.get("epochs"), training.get("global_step")
        if epochs is not None:
            lines.append(f"- epochs trained: {epochs} (optimizer steps, all optimizers: {steps})")
        for key in DATA_KEYS:
            if data.get(key) not in (None, ""):
                lines.append(f"- data.{key}: {_value(data[key])}")
        hp = training.get("hyper_parameters") or {}
        recipe = ", ".join(f"{k}={hp[k]}" for k in RECIPE_KEYS if k in hp)
        if recipe:
            lines.append(f"- recipe: {recipe} (all hyper-parameters: `config.json`, `training`)")
        if training.get("monitor") and training.get("best_score") is not None:
            lines.append(
                f"- best `{training['monitor']}` recorded by the checkpoint callback: {training['best_score']:.4g}"
            )
    if training.get("metrics"):
        lines += ["", "## Metrics", "", "Validation metrics of the run (`csv/metrics.csv`) at its checkpoints:", ""]
        lines += _metrics_table(training["metrics"])
    if SAMPLES_FILE in images:
        lines += ["", "## Samples", "", f"![Sample grid of the run at its end]({SAMPLES_FILE})"]
    lines += [
        "",
        "## Licence",
        "",
        f"`{license}`, as chosen when exporting (`export.py license=...`). The code that trained the model, "
        "cyclegan-lightning, is BSD-3-Clause; the weights derive from the training data, whose terms apply too.",
        "",
    ]
    return "\n".join(lines)
