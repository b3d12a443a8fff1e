"""Evaluation: FID/KID with verified Inception weights, cycle and paired PSNR/SSIM, a validation callback, and a
leaderboard over runs."""

from .callback import FIDCallback
from .evaluate import evaluate, to_markdown, write_results
from .metrics import (
    INCEPTION,
    FidKid,
    InceptionFeatures,
    MissingPackageError,
    MissingWeightsError,
    RandomConvFeatures,
    build_feature_extractor,
    fid_extractor,
    resolve_inception_weights,
)

__all__ = [
    "FIDCallback",
    "FidKid",
    "INCEPTION",
    "InceptionFeatures",
    "MissingPackageError",
    "MissingWeightsError",
    "RandomConvFeatures",
    "build_feature_extractor",
    "fid_extractor",
    "evaluate",
    "resolve_inception_weights",
    "to_markdown",
    "write_results",
]
