"""The artefacts the tool can download, read from ``registry.yaml`` (shipped beside this module): the one place where
a URL, a size, a SHA-256 or a licence is written down."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from importlib import resources
from urllib.parse import urlsplit

import yaml

from cyclegan_lightning.errors import ConfigError

KINDS = ("dataset", "pretrained", "metric-weights")
UNVERIFIED = "unverified"  # the registry's word for "no SHA-256 could be recorded"
MIRROR_ENV = "CYCLEGAN_MIRROR"  # a base URL tried first for every artefact: $CYCLEGAN_MIRROR/<kind>/<file name>


class UnknownArtefactError(ConfigError):
    """A name that is not in the registry (or one it lists as excluded)."""


@dataclass(frozen=True)
class Artefact:
    """One downloadable file: where it comes from, how big it is, and how it is checked."""

    name: str
    kind: str  # dataset | pretrained | metric-weights
    urls: tuple[str, ...]  # mirrors, tried in order
    size: str  # announced before the download
    sha256: str | None  # None: unverified (no digest recorded)
    licence: str
    about: str = ""
    layout: tuple[str, ...] = ()  # datasets: the folders the archive holds under its top folder

    @property
    def filename(self) -> str:
        """The file's name in the cache: the last part of its first URL."""
        return urlsplit(self.urls[0]).path.rsplit("/", 1)[-1]

    def mirrors(self) -> list[str]:
        """The URLs to try, in order: ``$CYCLEGAN_MIRROR/<kind>/<file name>`` first when that is set."""
        base = os.environ.get(MIRROR_ENV, "").strip().rstrip("/")
        return ([f"{base}/{self.kind}/{self.filename}"] if base else []) + list(self.urls)


@dataclass(frozen=True)
class Registry:
    """Artefacts by kind and name, and the datasets the reference lists that are not fetched (name -> why)."""

    artefacts: dict[str, dict[str, Artefact]]
    excluded: dict[str, str]

    def get(self, kind: str, name: str) -> Artefact:
        """The artefact, or an ``UnknownArtefactError`` listing the known names (or saying why it is excluded)."""
        if kind == "dataset" and name in self.excluded:
            raise UnknownArtefactError(f"dataset {name!r} is not fetched by this tool: {self.excluded[name]}.")
        known = self.artefacts.get(kind, {})
        if name not in known:
            raise UnknownArtefactError(f"no {kind} named {name!r}; known: {', '.join(sorted(known))}.")
        return known[name]

    def names(self, kind: str) -> list[str]:
        return sorted(self.artefacts.get(kind, {}))


def parse_registry(entries: dict) -> Registry:
    """A ``Registry`` from the YAML's mapping ``{kind: {name: fields}}``; a malformed entry raises ``ValueError``
    naming it (the file ships with the package, so that is a bug, not a user error)."""
    artefacts: dict[str, dict[str, Artefact]] = {kind: {} for kind in KINDS}
    excluded: dict[str, str] = {}
    for kind, named in entries.items():
        if kind not in KINDS:
            raise ValueError(f"registry: unknown kind {kind!r} (one of {KINDS})")
        for name, fields in named.items():
            if "excluded" in fields:
                excluded[name] = fields["excluded"]
                continue
            sha256 = str(fields["sha256"]).lower()
            if sha256 != UNVERIFIED and (len(sha256) != 64 or set(sha256) - set("0123456789abcdef")):
                raise ValueError(f"registry: {kind} {name}: sha256 must be 64 hex digits or {UNVERIFIED!r}")
            artefacts[kind][name] = Artefact(
                name=name,
                kind=kind,
                urls=tuple(fields["urls"]),
                size=str(fields["size"]),
                sha256=None if sha256 == UNVERIFIED else sha256,
                licence=fields["licence"],
                about=fields.get("about", ""),
                layout=tuple(fields.get("layout", ())),
            )
    return Registry(artefacts, excluded)


@functools.cache
def load_registry() -> Registry:
    """The registry shipped with the package (``cyclegan_lightning/downloads/registry.yaml``), read once."""
    text = resources.files(__package__).joinpath("registry.yaml").read_text(encoding="utf-8")
    return parse_registry(yaml.safe_load(text))


def artefact(kind: str, name: str) -> Artefact:
    """``load_registry().get(kind, name)``."""
    return load_registry().get(kind, name)
