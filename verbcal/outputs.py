"""Output files: never one of the command's inputs, writable before any work, written whole.

Every command that writes a file checks its output path first
(:func:`check_output`): an output that is the same file as an input, the
response cache or the calibrator (by ``os.path.samefile``, or by resolved path
when the output does not exist yet, so symlinks and ``./`` spellings count) is
refused, and so is a folder, a path under a missing folder or a place that
cannot be written. Files are then written atomically (:func:`atomic_write`):
a reader sees the old file or the new one, never half of one, and the new
file gets the permissions the user's umask gives any new file (0644 under the
usual umask 022).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TextIO

from verbcal.errors import InvalidInputError

__all__ = ["atomic_write", "check_output", "same_file"]


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when ``a`` and ``b`` name the same file (hard or symbolic links included).

    Two existing paths are compared with :func:`os.path.samefile`; otherwise
    their fully resolved absolute paths are compared.

    Examples
    --------
    >>> same_file("a/../b.csv", "./b.csv")
    True
    """
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(os.path.abspath(a)).resolve() == Path(os.path.abspath(b)).resolve()


def check_output(
    path: str | os.PathLike,
    option: str,
    inputs: Mapping[str, str | os.PathLike | None] | None = None,
) -> Path:
    """Refuse an output path that would destroy an input or that cannot be written.

    Parameters
    ----------
    path : path-like
        The file the command will write.
    option : str
        How the user named it (``"--out"``), for the message.
    inputs : mapping of str to path-like or None, optional
        The files the output must not be, by the option that named them
        (``{"--preds": Path("p.jsonl")}``); None values are skipped.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    InvalidInputError
        Saying which rule the path breaks; nothing has been written.
    """
    path = Path(path)
    for name, other in (inputs or {}).items():
        if other is not None and same_file(path, other):
            raise InvalidInputError(
                f"{option} {path} is the same file as {name} {other}: writing it would destroy "
                f"{name}; choose another {option}"
            )
    if path.is_dir():
        raise InvalidInputError(f"{option} {path} is a folder: give a file name")
    folder = path.parent
    if not folder.exists():
        raise InvalidInputError(f"{option} {path}: the folder {folder} does not exist")
    if not folder.is_dir():
        raise InvalidInputError(f"{option} {path}: {folder} is not a folder")
    if path.exists() and not os.access(path, os.W_OK):
        raise InvalidInputError(f"{option} {path}: the file is not writable")
    try:  # the atomic write needs a new file beside the output
        fd, probe = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".probe")
    except OSError as exc:
        raise InvalidInputError(
            f"{option} {path}: cannot write in {folder} ({exc.strerror or exc})"
        ) from None
    os.close(fd)
    os.unlink(probe)
    return path


def _new_file_mode() -> int:
    """Permissions of a new file under the current umask (0644 under umask 022)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str | os.PathLike, write: Callable[[TextIO], object]) -> Path:
    """Write a UTF-8 text file through ``write(handle)``, atomically, with umask permissions.

    The text goes to a temporary file beside ``path`` that replaces ``path``
    only once it is complete and flushed to disk; on any error the temporary
    file is removed and ``path`` is unchanged.

    Examples
    --------
    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "out.txt"
    >>> atomic_write(target, lambda handle: handle.write("hello\\n")).read_text()
    'hello\\n'
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _new_file_mode())
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
