"""Unpacking a downloaded zip safely and atomically.

Safely: every member is checked before anything is written; an absolute path, a ``..`` component or a symbolic
link (or any other special file) refuses the whole archive, naming the members. Python's ``zipfile`` would quietly
rewrite such names; a dataset archive never needs them, so their presence means the file is not what it claims.

Atomically: the archive is unpacked into a temporary folder beside the destination, its layout is checked, and only
then is its top folder renamed to the destination. A failure at any point (a corrupt member, a full disk, a missing
folder) removes the temporary folder, so the destination either does not exist or is complete.
"""

from __future__ import annotations

import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path

from cyclegan_lightning.errors import DataError

IGNORED_TOP = ("__MACOSX",)  # resource forks macOS adds to zips it writes


class UnsafeArchiveError(DataError):
    """An archive with a member that would land outside its folder (absolute path, ``..``, symbolic link)."""


def hostile_members(archive: zipfile.ZipFile) -> list[str]:
    """Members that could write outside the folder they are unpacked into, each with the reason."""
    found = []
    for info in archive.infolist():
        name = info.filename
        parts = re.split(r"[\\/]", name)
        kind = stat.S_IFMT(info.external_attr >> 16)  # the unix file type, where the archiver recorded one
        if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
            found.append(f"{name} (absolute path)")
        elif ".." in parts:
            found.append(f"{name} (.. in its path)")
        elif kind == stat.S_IFLNK:
            found.append(f"{name} (symbolic link)")
        elif kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            found.append(f"{name} (special file)")
    return found


def unpack_zip(archive_path: Path, dest: Path, layout: tuple[str, ...] = ()) -> Path:
    """Unpack ``archive_path`` into ``dest`` (which must not exist): its single top folder becomes ``dest`` (a zip
    without one is taken whole). ``layout``: folders that must be there afterwards. Nothing is left at ``dest`` on
    failure."""
    archive_path, dest = Path(archive_path), Path(dest)
    try:
        archive = zipfile.ZipFile(archive_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(
            f"{archive_path} is not a readable zip archive ({exc}); a cut or altered download? Delete it and fetch "
            "again."
        ) from None
    with archive:
        hostile = hostile_members(archive)
        if hostile:
            listing = ", ".join(hostile[:5]) + (f" and {len(hostile) - 5} more" if len(hostile) > 5 else "")
            raise UnsafeArchiveError(
                f"{archive_path} has member(s) that would land outside {dest}: {listing}. Nothing was unpacked; "
                "the archive is not the published one: delete it."
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".unpacking", dir=dest.parent))
        try:
            archive.extractall(staging)
            top = [p for p in staging.iterdir() if p.name not in IGNORED_TOP]
            root = top[0] if len(top) == 1 and top[0].is_dir() else staging
            missing = [folder for folder in layout if not (root / folder).is_dir()]
            if missing:
                found = ", ".join(sorted(p.name for p in root.iterdir())) or "nothing"
                raise DataError(
                    f"{archive_path} has no {', '.join(f + '/' for f in missing)} (found: {found}); nothing was "
                    f"written to {dest}."
                )
            root.rename(dest)
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise DataError(
                f"{archive_path} is corrupt ({exc}); nothing was written to {dest}. Delete it and fetch again."
            ) from None
        except OSError as exc:
            raise DataError(
                f"cannot unpack {archive_path} into {dest.parent} ({exc.strerror or exc}); nothing was written to "
                f"{dest}. Free some space or choose another data_dir."
            ) from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return dest
