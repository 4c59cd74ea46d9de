"""Paths checked up front. Inputs: an empty path or a symbolic-link loop is named as
such, not reported as a missing file (or the current folder). Outputs: a run that
measures for minutes must not fail at the end because its output file cannot be written."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path


def check_input_path(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` (the input ``what``, e.g. "lookup table") as a Path, ``~`` expanded, once
    it can name a file: ValueError for an empty path (``Path("")`` is the current folder)
    and for one whose symbolic links cannot be resolved. A path that is only missing is
    returned: each caller says "not found" in its own words."""
    if not os.fspath(path):
        raise ValueError(f"{what} path is empty")
    p = _expanded(path)
    if why := unresolvable(p):
        raise ValueError(f"{what} {p} cannot be resolved: {why}")
    return p


def _expanded(path: str | os.PathLike[str]) -> Path:
    try:
        return Path(path).expanduser()
    except RuntimeError:   # an unknown ~user: left as written, then reported as not found
        return Path(path)


def unresolvable(p: Path) -> str:
    """Why ``p``'s symbolic links cannot be followed (a loop, a name too long); "" when
    they can or ``p`` is only missing. ``Path.exists`` says False for a loop, so a loop
    would read as "not found"."""
    try:
        p.stat()
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "a symbolic link loop (or too many levels of links)"
        if e.errno == errno.ENAMETOOLONG:
            return "the name is too long"
    except ValueError:   # an embedded NUL byte
        return "the name holds a NUL byte"
    return ""


def check_output_file(path: str | os.PathLike[str], what: str, *, force: bool | None = None,
                      suffix: str | None = None, kind: str = ".json file") -> Path:
    """The path ``what`` (e.g. ``--out``) will be written to, once it is known to be
    writable: not a directory nor any other existing non-regular file (a device, FIFO or
    socket), its folder created if missing, a file can be made there.

    ``force``: None lets an existing file be replaced; False refuses one
    (FileExistsError naming ``--force``). ``suffix``: the only ending accepted
    (``.png``); ``kind`` says what is expected instead of a directory. Raises ValueError /
    FileExistsError with one line naming the path."""
    if not os.fspath(path):
        raise ValueError(f"{what} path is empty")
    p = _expanded(path)
    if why := unresolvable(p):   # writing through it would fail after the measuring
        raise ValueError(f"{what} {p} cannot be resolved: {why}")
    if p.is_dir():
        raise ValueError(f"{what} {p} is a directory, expected a {kind} path")
    special = _special_kind(p)
    if special:   # the atomic writers would replace it (as root, even /dev/null) with a file
        raise ValueError(f"{what} {p} is a {special}, not a regular file; expected a "
                         f"{kind} path (a new file or an existing regular one)")
    if suffix is not None and p.suffix.lower() != suffix:
        raise ValueError(f"{what} {p}: expected a {suffix} file, got "
                         f"{p.suffix or 'no extension'}")
    if force is False and p.exists():
        raise FileExistsError(f"{p} exists; pass --force to overwrite it")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"{what} {p}: cannot create its folder {p.parent} "
                         f"({folder_error(e)})") from None
    try:  # the results are written atomically there: a temporary file beside the target
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise ValueError(f"{what} {p}: cannot create a file in {p.parent} "
                         f"({e.strerror or e})") from None
    if p.is_file():   # some writers replace it in place: it must open for writing
        try:
            with open(p, "a"):   # appends nothing: the file is left as it was
                pass
        except OSError as e:
            raise ValueError(f"{what} {p}: cannot write it ({e.strerror or e})") from None
    return p


def _special_kind(p: Path) -> str:
    """What an existing ``p`` is when it is neither a regular file nor a directory
    (symbolic links followed); "" otherwise, or when it does not exist."""
    try:
        mode = p.stat().st_mode
    except OSError:   # missing (or a dangling link): a new file is made there
        return ""
    for test, name in ((stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISFIFO, "FIFO (named pipe)"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "" if stat.S_ISREG(mode) or stat.S_ISDIR(mode) else "special file"


def folder_error(e: OSError) -> str:
    """Why a folder could not be made; "File exists" would hide that a file is in the way."""
    if isinstance(e, (FileExistsError, NotADirectoryError)):
        return "a file is in the way"
    return e.strerror or str(e)
