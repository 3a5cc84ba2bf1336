"""One run at a time per output: an exclusive lock file held while a command writes into a folder (or one file).

The lock is an OS file lock (``flock`` / ``msvcrt.locking``) on ``.ftprobe.lock``, so a run that dies, even by
``kill -9``, releases it with its process: a stale lock file never blocks the next run. The file holds the owner's
pid and command, which the refusal names.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ftprobe.core.errors import FtprobeError

__all__ = ["LOCK_NAME", "OutputBusy", "output_lock"]

LOCK_NAME = ".ftprobe.lock"


class OutputBusy(FtprobeError):
    """Another ftprobe run is writing into the same output."""


def _try_lock(fd: int) -> bool:
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _owner(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        text = ""
    pid, _, command = text.partition(" ")
    return f"pid {pid} ({command})" if pid.isdigit() and command else f"pid {pid}" if pid.isdigit() else "unknown pid"


@contextmanager
def output_lock(target: str | os.PathLike[str], option: str = "--out", command: str = "ftprobe") -> Iterator[Path]:
    """Hold an exclusive lock on the output ``target`` for the duration of the block.

    ``target`` is a folder (the lock is ``target/.ftprobe.lock``) or a file that does not need to exist yet (the lock
    is ``.NAME.lock`` beside it). A second holder gets :class:`OutputBusy` at once, naming the first one's pid, and
    how to run both: another ``option``.
    """
    target = Path(target)
    folder = target if option == "--out" else target.parent
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / (LOCK_NAME if option == "--out" else f".{target.name}.lock")
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):
            os.close(fd)
            raise OutputBusy(
                f"{target} is in use by another ftprobe run, {_owner(lock)}: two runs writing there would overwrite "
                f"each other's results. Give this run another {option}, or wait for that run to finish."
            )
        try:  # the previous holder may have removed the file between our open and our lock: lock the live one
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {command}\n".encode())
        yield lock
    finally:
        try:
            os.unlink(lock)  # before unlocking, so a waiting opener finds a fresh file (see the inode check)
        except OSError:
            pass
        os.close(fd)
