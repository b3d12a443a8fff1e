"""Weight-free metrics (no network, no download), a floor below the models and evaluation, which both use them:
``val/swd`` (swd.py), the health signals (health.py) and paired PSNR/SSIM (paired.py). FID/KID need Inception
weights and live in ``evaluation/``."""
