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
    WeightsFile,
    build_feature_extractor,
    default_inception_path,
    download_weights,
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
    "WeightsFile",
    "RandomConvFeatures",
    "build_feature_extractor",
    "default_inception_path",
    "download_weights",
    "fid_extractor",
    "evaluate",
    "resolve_inception_weights",
    "to_markdown",
    "write_results",
]
