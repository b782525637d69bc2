"""Writing the files a command makes: never over a file this tool did not make, and all of them or none.

Every command that writes files the user names (``report -o/--markdown``, the report that ``run`` builds,
``evaluate --out``, ``pretrain --out``, ``data preview -o``, ``bench --json``) goes through here in two
steps, so a bad destination costs nothing and a failed write leaves nothing half-replaced:

1. :func:`check_outputs` before any work: each destination is an :class:`Output` with the test that
   recognises a file of its kind made by this tool (:func:`html_generator`, :func:`json_field`,
   :func:`csv_header`, :func:`png_software`). A destination that is a folder, not a regular file, in a
   folder that cannot be written, or an existing file the test does not recognise (a results database,
   a suite, a checkpoint, another program's page) is refused in one line (:class:`OutputError`) and
   nothing is written.
2. :func:`write_all`: every file goes to a temporary file beside its destination first; only when all
   of them are written are they renamed into place (``os.replace``, atomic on POSIX). A write that fails
   (a full disk, ``/dev/full``) removes the temporary files and says that nothing was replaced.

This module imports nothing of the harness, so the data layer, the report and the commands all use it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

#: Bytes read from the start of an existing file to recognise it (markers sit in the first lines).
HEAD_BYTES = 8192
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class OutputError(ValueError):
    """A destination that cannot be written (one line: the option, the path, why, what is accepted)."""


#: Whether an existing file is one this tool made (and may replace); the reason shown when it is not.
Recognise = Callable[[Path], bool]


@dataclass(frozen=True)
class Output:
    """One destination of a command: its path, what it holds, how an earlier one of ours is recognised.

    ``flag`` is how the user named it (``-o``, ``--markdown``; ``"beside -o"`` for a file that goes with
    another); ``kind`` what it is ("report page", "summary.json"); ``ours`` the test an existing file
    must pass to be replaced.
    """

    path: Path
    kind: str
    ours: Recognise
    flag: str


def unwritable(folder: Path) -> str | None:
    """Why no file can be written in ``folder``, or None. A folder that does not exist yet is judged by
    its nearest existing ancestor (where it would be created); nothing is left behind."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a directory" if existing == folder else \
            f"{existing} is a file, so no directory can be made below it"
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        return f"{existing} is not writable ({err.strerror or type(err).__name__})"
    return None


def check_outputs(outputs: Sequence[Output]) -> None:
    """Raise :class:`OutputError` for the first destination that cannot take its file; writes nothing."""
    for out in outputs:
        path = out.path
        where = f"{out.flag} {path}"
        if path.is_dir():
            raise OutputError(f"{where}: a folder; nothing was written; accepted: a file path for the {out.kind}")
        if path.exists() or path.is_symlink():
            if not path.is_file():
                raise OutputError(f"{where}: not a regular file; nothing was written; accepted: a new path, or a "
                                  f"{out.kind} this tool wrote")
            if not out.ours(path):
                raise OutputError(f"{where}: an existing file that is not a {out.kind} written by this tool; "
                                  f"nothing was written (it would be overwritten); accepted: a new path, or a "
                                  f"{out.kind} this tool wrote")
        problem = unwritable(path.parent)
        if problem is not None:
            raise OutputError(f"{where}: {problem}; nothing was written; accepted: a path in a folder this user can "
                              "write to")


def write_all(files: Mapping[Path, str | bytes]) -> None:
    """Write every file or none: temporary files beside their destinations, then one rename each.

    Text is written as UTF-8. Raises ``OSError`` (its message ends with "nothing was replaced") when a
    temporary file cannot be written; the destinations are then as they were.
    """
    temps: list[tuple[Path, Path]] = []
    try:
        for path, content in files.items():
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            temps.append((Path(tmp), path))
            with os.fdopen(fd, "wb") as handle:
                handle.write(content.encode("utf-8") if isinstance(content, str) else content)
                handle.flush()
                os.fsync(handle.fileno())  # on disk before the rename makes it the file
    except OSError as err:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)
        names = ", ".join(str(Path(p)) for p in files)
        raise OSError(err.errno, f"{err.strerror or err} writing {temps[-1][1] if temps else names}; nothing was "
                                 f"replaced ({names} are as they were)") from err
    except BaseException:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, path in temps:
        os.replace(tmp, path)


def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(HEAD_BYTES)
    except OSError:
        return b""


def html_generator(generator: str) -> Recognise:
    """An HTML page whose head carries ``<meta name="generator" content="GENERATOR">``."""
    marker = f'<meta name="generator" content="{generator}">'.encode()
    return lambda path: marker in _head(path)


def json_field(key: str, accepted: Callable[[object], bool]) -> Recognise:
    """A JSON object whose ``key`` holds a value ``accepted`` takes (e.g. a format string of ours)."""

    def ours(path: Path) -> bool:
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            return False
        return isinstance(obj, dict) and key in obj and bool(accepted(obj[key]))

    return ours


def csv_header(columns: Sequence[str]) -> Recognise:
    """A CSV file whose first line is exactly these column names."""
    line = ",".join(columns).encode()
    return lambda path: _head(path).splitlines()[:1] == [line]


def png_software(software: str) -> Recognise:
    """A PNG image whose ``Software`` text chunk is ``software`` (matplotlib's ``savefig(metadata=...)``).

    Read by hand from the chunks before the image data, so recognising a file needs no image library.
    """

    def ours(path: Path) -> bool:
        head = _head(path)
        if not head.startswith(PNG_SIGNATURE):
            return False
        pos = len(PNG_SIGNATURE)
        while pos + 8 <= len(head):
            length = int.from_bytes(head[pos:pos + 4], "big")
            kind = head[pos + 4:pos + 8]
            if kind in (b"IDAT", b"IEND"):
                return False
            data = head[pos + 8:pos + 8 + length]
            if kind == b"tEXt" and data.partition(b"\0") == (b"Software", b"\0", software.encode("latin-1")):
                return True
            pos += 12 + length
        return False

    return ours


def either(*tests: Recognise) -> Recognise:
    """A file any of ``tests`` recognises."""
    return lambda path: any(t(path) for t in tests)


__all__ = ["Output", "OutputError", "Recognise", "check_outputs", "csv_header", "either", "html_generator",
           "json_field", "png_software", "unwritable", "write_all"]
