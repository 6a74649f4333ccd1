"""Atomic file output: write to a temporary file beside the target, then rename.

A crash, a kill or a full disk never leaves a half-written model, report or graph behind. The
result gets the permissions any new file of the user gets (``0666`` less the umask, not the
``0600`` of a temporary file). Temporary files are named ``.NAME.PID.XXXX.tmp``; one left by a
process that was killed outright (SIGKILL, power loss) is removed by the next write to the same
target, once its process is gone.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from cgap_graph.io.outputs import OutputError, check_output


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _sweep_stale(path: Path) -> None:
    """Remove temporary files of this target left by processes that no longer run."""
    parent = path.parent
    prefix = f".{path.name}."
    try:
        names = [n for n in os.listdir(parent) if n.startswith(prefix) and n.endswith(".tmp")]
    except OSError:
        return
    for n in names:
        pid = n[len(prefix):].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            try:
                os.unlink(parent / n)
            except OSError:
                pass


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then move the result to ``path`` in one step."""
    path = check_output(path, flag="output")
    _sweep_stale(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror} in {path.parent}; choose another output") from None
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
    atomic_write(path, write)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text"]
