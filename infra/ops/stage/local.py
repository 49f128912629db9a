"""The local side of the plan of work: which files under SRC are staged, with their stat."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LocalFile:
    """A regular file to stage; `mtime_ns` and `inode` key the hash cache."""

    path: Path
    relative: str  # POSIX path relative to the source directory: the key suffix
    size: int
    mtime_ns: int = 0
    inode: int = 0


def _selected(relative: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    if include and not any(fnmatch.fnmatchcase(relative, g) for g in include):
        return False
    return not any(fnmatch.fnmatchcase(relative, g) for g in exclude)


def list_local_files(
    src: Path, include: Sequence[str] = (), exclude: Sequence[str] = ()
) -> list[LocalFile]:
    """Regular files under `src` (symlinked files followed), sorted, filtered by globs.

    Globs match the POSIX path relative to `src` (`*` also matches `/`). One stat per file
    (os.scandir caches it): size, mtime and inode come from the same call.
    """
    files: list[LocalFile] = []
    _walk(src, "", include, exclude, files)
    return files


def _walk(
    directory: Path,
    relative_dir: str,
    include: Sequence[str],
    exclude: Sequence[str],
    out: list[LocalFile],
) -> None:
    with os.scandir(directory) as it:
        entries = sorted(it, key=lambda e: e.name)
    subdirs: list[os.DirEntry[str]] = []
    for entry in entries:
        relative = f"{relative_dir}{entry.name}"
        if entry.is_dir(follow_symlinks=False):
            subdirs.append(entry)
            continue
        if not entry.is_file() or not _selected(relative, include, exclude):
            continue
        st = entry.stat()  # follows a symlink to its target, like Path.stat()
        out.append(LocalFile(Path(entry.path), relative, st.st_size, st.st_mtime_ns, st.st_ino))
    # os.walk order: a directory's files first, then its subdirectories, each sorted.
    for entry in subdirs:
        _walk(Path(entry.path), f"{relative_dir}{entry.name}/", include, exclude, out)
