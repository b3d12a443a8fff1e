"""The one download path of the tool: a registry artefact into the one cache, verified, atomic, bounded in time.

Built on pooch (``pooch.retrieve``): it streams the file with requests into a temporary file beside the target,
checks the SHA-256 before the rename (a mismatch deletes the temporary file), and shows one tqdm progress bar.
What is added here: the mirrors tried in order, one offline switch, a timeout on every connect and read (pooch
passes it to requests, so a silent server fails instead of hanging), errors that say what to do, and a loud
warning for an artefact with no recorded SHA-256 that prints the digest it got, so that it can be recorded.

Why pooch and not huggingface_hub's cache: ``hf_hub_download`` fetches files of Hub repositories only (our files
are on Berkeley's and GitHub's servers), keys its cache by repository and revision, and checks what the server
announces (ETag) rather than a digest we pin. pooch fetches any URL against a pinned SHA-256 and is small
(requests, platformdirs, packaging). The Hub belongs to models we publish in its layout, not to these files.

The cache: ``$CYCLEGAN_CACHE`` if set, else the platform's user cache (``~/.cache/cyclegan_lightning`` on Linux,
``$XDG_CACHE_HOME/cyclegan_lightning`` where that is set), one folder per kind: ``<cache>/<kind>/<file name>``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pooch
import requests

from cyclegan_lightning.downloads.registry import Artefact
from cyclegan_lightning.errors import CycleGANError

log = logging.getLogger(__name__)
CACHE_ENV = "CYCLEGAN_CACHE"  # where downloads are kept (default: the platform's user cache)
OFFLINE_ENV = "CYCLEGAN_OFFLINE"  # =1: never download (air-gapped machines); files already cached are used
DEFAULT_TIMEOUT_S = 60.0  # per connect/read: a silent server fails after this instead of hanging


class DownloadError(CycleGANError):
    """A file could not be had: every mirror failed, it is altered, or downloads are off and it is not cached."""


def cache_root() -> Path:
    """``$CYCLEGAN_CACHE``, else the platform's user cache folder for this tool."""
    env = os.environ.get(CACHE_ENV, "").strip()
    return Path(env).expanduser() if env else Path(pooch.os_cache("cyclegan_lightning"))


def cached_path(art: Artefact, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where ``art`` lives once downloaded: ``<cache>/<kind>/<file name>``."""
    return (Path(cache_dir) if cache_dir else cache_root()) / art.kind / art.filename


def offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def matches(path: Path, art: Artefact) -> bool:
    """Whether ``path`` is ``art`` as far as can be told: its SHA-256 where one is recorded, else that it exists."""
    return path.is_file() and (art.sha256 is None or pooch.file_hash(str(path), alg="sha256") == art.sha256)


def by_hand(art: Artefact, target: Path) -> str:
    """How to put the file in place without this tool (offline machines, a blocked host)."""
    digest = f"SHA-256 {art.sha256}" if art.sha256 else "no SHA-256 recorded"
    return f"On a machine with internet, download {art.urls[0]} ({art.size}, {digest}) and copy it to {target}."


def fetch(
    art: Artefact,
    cache_dir: str | os.PathLike | None = None,  # default: cache_root()
    timeout: float = DEFAULT_TIMEOUT_S,
    progress: bool = True,  # one tqdm bar per download
    downloads_off: str | None = None,  # a setting that forbids downloading (named in the error), as CYCLEGAN_OFFLINE
) -> Path:
    """The cached file of ``art``, downloaded first if it is not there (or no longer matches its SHA-256).

    Raises ``DownloadError`` saying what failed at each mirror, or, when downloads are off, which file to put where.
    """
    target = cached_path(art, cache_dir)
    if matches(target, art):
        return target
    off = downloads_off or (f"{OFFLINE_ENV}=1" if offline() else None)
    altered = target.is_file()
    if off:
        state = "does not match its recorded SHA-256" if altered else "is not there"
        raise DownloadError(
            f"{art.kind} {art.name}: {target} {state} and downloads are off ({off}). {by_hand(art, target)}"
        )
    if altered:
        log.warning("%s does not match its recorded SHA-256: deleting it and downloading it again", target)
        target.unlink()
    return _download(art, target, timeout, progress)


def _download(art: Artefact, target: Path, timeout: float, progress: bool) -> Path:
    log.info(
        "downloading %s %s (%s, once) to %s; %s=1 stops downloads", art.kind, art.name, art.size, target, OFFLINE_ENV
    )
    failures = []
    for url in art.mirrors():
        try:
            with _quiet_pooch():
                pooch.retrieve(
                    url,
                    known_hash=f"sha256:{art.sha256}" if art.sha256 else None,
                    fname=target.name,
                    path=target.parent,
                    downloader=pooch.HTTPDownloader(progressbar=progress, timeout=timeout),
                )
        except requests.RequestException as exc:  # before OSError: requests' errors are OSErrors too
            failures.append(f"{url}: {_reason(exc, timeout)}")
            continue
        except ValueError as exc:  # pooch: the SHA-256 differs; it has deleted the download
            failures.append(f"{url}: checksum mismatch, the file was deleted ({exc})")
            continue
        except OSError as exc:  # the cache itself: full disk, no permission
            raise DownloadError(
                f"cannot write {target} ({exc.strerror or exc}). Free some space or set {CACHE_ENV}=<a folder with "
                "room>."
            ) from None
        if art.sha256 is None:
            _warn_unverified(art, url, target)
        else:
            log.info("verified %s (sha256 %s...)", target, art.sha256[:12])
        return target
    raise DownloadError(
        f"{art.kind} {art.name}: every mirror failed, nothing was written to {target}: {'; '.join(failures)}. "
        + by_hand(art, target)
    )


def _reason(exc: requests.RequestException, timeout: float) -> str:
    if isinstance(exc, requests.Timeout):
        return f"no answer within {timeout:g} s (timed out)"
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code} {exc.response.reason or ''}".rstrip()
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "truncated: the connection closed before the announced length arrived"
    return f"{type(exc).__name__}: {exc}"


def _warn_unverified(art: Artefact, url: str, target: Path) -> None:
    digest = pooch.file_hash(str(target), alg="sha256")
    log.warning(
        "UNVERIFIED: %s %s has no SHA-256 recorded, so its content could not be checked. It came from %s; its "
        "SHA-256 is %s. Compare it with a trusted copy and record it as `sha256: %s` under %s: %s: in "
        "cyclegan_lightning/downloads/registry.yaml.",
        art.kind,
        art.name,
        url,
        digest,
        digest,
        art.kind,
        art.name,
    )


@contextmanager
def _quiet_pooch() -> Iterator[None]:
    """pooch logs its own lines (with advice about its API) at INFO; ours say the same for this tool."""
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
