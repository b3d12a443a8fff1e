"""Serve a trained generator over HTTP, with a web page: upload an image, get its translation.

python serve.py ckpt_path=outputs/demo/runs/<run>/checkpoints/last.ckpt            # http://127.0.0.1:8000
python serve.py ckpt_path=latest_net_G_A.pth host=0.0.0.0 port=8080 max_pixels=4194304
curl -F image=@photo.jpg 'http://127.0.0.1:8000/translate?direction=a2b' -o out.png
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from cyclegan_lightning.cli import run_command
from cyclegan_lightning.errors import ConfigError
from cyclegan_lightning.inference import build_translator

log = logging.getLogger("serve")


def serve(cfg: DictConfig) -> None:
    """Load the model once, then serve until interrupted."""
    try:
        import uvicorn

        from cyclegan_lightning.serving import create_app
    except ImportError as exc:
        raise ConfigError(f"serve.py needs {exc.name}: pip install 'cyclegan-lightning[serve]'") from None
    translator = build_translator(cfg.ckpt_path, cfg.translator)
    log.info("loaded %s on %s (%s)", translator.loaded.describe(), translator.device, translator.backend)
    app = create_app(
        translator,
        max_upload_bytes=cfg.max_upload_bytes,
        max_pixels=cfg.max_pixels,
        max_batch_size=cfg.max_batch_size,
    )
    log.info("serving on http://%s:%d (the page at /, POST /translate?direction=...)", cfg.host, cfg.port)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level=cfg.log_level)


@hydra.main(version_base="1.3", config_path="conf", config_name="serve")
def main(cfg: DictConfig) -> None:
    run_command("serve", serve, cfg)


if __name__ == "__main__":
    main()
