"""Fetch a dataset or a pretrained generator of the reference (``conf/fetch.yaml``).

python -m cyclegan_lightning.fetch list=true
python -m cyclegan_lightning.fetch dataset=horse2zebra      # then: python train.py experiment=horse2zebra
python -m cyclegan_lightning.fetch pretrained=horse2zebra   # or directly: predict.py ckpt_path=pretrained:horse2zebra
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from cyclegan_lightning.cli import run_command
from cyclegan_lightning.downloads import (
    SCHEME,
    artefact,
    cache_root,
    fetch,
    fetch_command,
    fetch_dataset,
    load_registry,
)
from cyclegan_lightning.errors import ConfigError

log = logging.getLogger("fetch")
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def listing() -> str:
    """What can be fetched: per kind, each name with its size, whether it is verified, and what it is."""
    registry = load_registry()
    lines = [f"cache: {cache_root()} (set CYCLEGAN_CACHE to move it)"]
    usage = {"dataset": fetch_command("<name>"), "pretrained": f"predict.py ckpt_path={SCHEME}<name> ..."}
    for kind, named in registry.artefacts.items():
        lines.append(f"\n{kind}" + (f"  ({usage[kind]})" if kind in usage else ""))
        for name, art in sorted(named.items()):
            check = "sha256" if art.sha256 else "unverified"
            lines.append(f"  {name:<24} {art.size:>11}  {check:<10}  {art.about}")
    if registry.excluded:
        lines.append("\nnot fetched")
        lines += [f"  {name:<24} {why}" for name, why in sorted(registry.excluded.items())]
    return "\n".join(lines)


def run(cfg: DictConfig) -> Path | None:
    """Print the listing, or fetch what ``cfg`` names; returns the dataset folder or the generator file."""
    if cfg.list:
        print(listing())
        return None
    if not cfg.dataset and not cfg.pretrained:
        raise ConfigError(
            "say what to fetch: dataset=<name> or pretrained=<name> (python -m cyclegan_lightning.fetch list=true "
            "shows the names)"
        )
    if cfg.dataset:
        return fetch_dataset(
            cfg.dataset, cfg.data_dir, keep_archive=cfg.keep_archive, timeout=cfg.timeout, progress=cfg.progress
        )
    path = fetch(artefact("pretrained", cfg.pretrained), timeout=cfg.timeout, progress=cfg.progress)
    log.info(
        "%s is at %s; translate with: python predict.py ckpt_path=%s%s ...",
        cfg.pretrained,
        path,
        SCHEME,
        cfg.pretrained,
    )
    return path


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="fetch")
def main(cfg: DictConfig) -> None:
    run_command("fetch", run, cfg)


if __name__ == "__main__":
    main()
