"""Writing a file so that a crash, a kill or a full disk leaves the previous file whole, never
half a file.

The new content goes to a temporary file beside the target (``.NAME.PID.XXXX.part``), is
flushed to disk, then renamed over the target in one step. A process killed mid-write leaves
only its temporary file; the next write of the same file removes it once its writer is gone.
"""

from __future__ import annotations

import errno
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

#: where a writer's process cannot be asked whether it lives (Windows), leftovers this old go
STALE_PART_SECONDS = 24 * 3600


class WriteFailed(OSError):
    """A file could not be written (a full disk, no permission ...); says which, and that the
    previous file is unchanged."""

    def __str__(self) -> str:
        return str(self.strerror)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _writer_gone(part: Path) -> bool:
    try:
        pid = int(part.name.rsplit(".part", 1)[0].split(".")[-2])
    except (ValueError, IndexError):
        pid = None
    if pid is not None and sys.platform != "win32":
        try:
            os.kill(pid, 0)         # signal 0: only asks whether the process exists
        except ProcessLookupError:
            return True
        except PermissionError:     # alive, someone else's
            return False
        return False
    try:
        return time.time() - part.stat().st_mtime > STALE_PART_SECONDS
    except OSError:
        return False


def remove_leftovers(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that killed writes of ``path`` left beside it."""
    path = Path(path)
    removed = []
    for part in path.parent.glob(f".{path.name}.*.part"):
        if _writer_gone(part):
            part.unlink(missing_ok=True)
            removed.append(part)
    return removed


def atomic_write(path: str | os.PathLike, write: Callable[[IO], Any], mode: str = "wb") -> Path:
    """``write(file)`` into a temporary file beside ``path``, then rename: a crash or a kill
    leaves the previous file whole, never half a file. A failed write (a full disk ...) raises
    an OSError that names the file and says the previous one is unchanged."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".part", dir=path.parent)
    os.close(fd)     # reopened by name: some writers (tifffile) want a file with a path
    try:
        with open(tmp, mode) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp makes the file private (0600); the user's file gets the usual umask mode.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        kept = "the previous file is unchanged" if path.exists() else "nothing was written"
        space = " (the disk is full)" if err.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        raise WriteFailed(err.errno, f"could not write {path}{space}: {err.strerror or err}; {kept}") from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
