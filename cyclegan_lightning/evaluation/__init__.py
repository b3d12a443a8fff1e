"""Evaluation: FID/KID with verified Inception weights, cycle and paired PSNR/SSIM of checkpoints, validation
callbacks, reports and a leaderboard over runs.

Names are imported lazily (PEP 562): importing one submodule, such as ``evaluation.paired`` that the training
config names, does not load the inference stack. ``evaluate()`` is ``evaluation.evaluate.evaluate`` (the package
attribute ``evaluate`` is that submodule)."""

from __future__ import annotations

import importlib

_HOMES = {
    "FIDCallback": "callback",
    "to_markdown": "report",
    "write_results": "report",
    "INCEPTION": "metrics",
    "FidKid": "metrics",
    "InceptionFeatures": "metrics",
    "MissingPackageError": "metrics",
    "MissingWeightsError": "metrics",
    "RandomConvFeatures": "metrics",
    "build_feature_extractor": "metrics",
    "fid_extractor": "metrics",
    "resolve_inception_weights": "metrics",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
