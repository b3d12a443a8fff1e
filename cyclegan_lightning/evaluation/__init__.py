"""Evaluation: FID/KID with local Inception weights, cycle and paired PSNR/SSIM, a validation callback, and a
leaderboard over runs."""

from .callback import FIDCallback
from .evaluate import evaluate, to_markdown, write_results
from .metrics import (
    FidKid,
    InceptionFeatures,
    MissingWeightsError,
    RandomConvFeatures,
    build_feature_extractor,
    default_inception_path,
    resolve_inception_weights,
)

__all__ = [
    "FIDCallback",
    "FidKid",
    "InceptionFeatures",
    "MissingWeightsError",
    "RandomConvFeatures",
    "build_feature_extractor",
    "default_inception_path",
    "evaluate",
    "resolve_inception_weights",
    "to_markdown",
    "write_results",
]
