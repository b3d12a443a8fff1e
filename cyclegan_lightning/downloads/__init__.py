"""Everything the tool downloads (datasets, the reference's pretrained generators, FID's Inception weights) goes
through one path: a registry entry (``registry.yaml``) fetched by pooch into one cache, with mirrors, a timeout,
SHA-256 verification where a digest is recorded, and one offline switch (``CYCLEGAN_OFFLINE=1``)."""

from .archives import UnsafeArchiveError, hostile_members, unpack_zip
from .datasets import fetch_command, fetch_dataset, fetch_hint
from .download import (
    CACHE_ENV,
    DEFAULT_TIMEOUT_S,
    OFFLINE_ENV,
    DownloadError,
    by_hand,
    cache_root,
    cached_path,
    fetch,
    matches,
    offline,
)
from .pretrained import SCHEME, resolve_pretrained
from .registry import MIRROR_ENV, Artefact, Registry, UnknownArtefactError, artefact, load_registry

__all__ = [
    "CACHE_ENV",
    "DEFAULT_TIMEOUT_S",
    "MIRROR_ENV",
    "OFFLINE_ENV",
    "SCHEME",
    "Artefact",
    "DownloadError",
    "Registry",
    "UnknownArtefactError",
    "UnsafeArchiveError",
    "artefact",
    "by_hand",
    "cache_root",
    "cached_path",
    "fetch",
    "fetch_command",
    "fetch_dataset",
    "fetch_hint",
    "hostile_members",
    "load_registry",
    "matches",
    "offline",
    "resolve_pretrained",
    "unpack_zip",
]
