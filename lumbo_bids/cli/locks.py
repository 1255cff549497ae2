"""One run per subject and work dir: an exclusive lock, so a second run says 'already running'."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from pathlib import Path

from ..errors import ExitCode, LumboError


def lock_path(work_dir: Path, subject: str) -> Path:
    return Path(work_dir) / ".locks" / f"sub-{subject}.lock"


def _acquire(path: Path):
    """``(open file holding an exclusive lock on path, None)`` or ``(None, who holds it)``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        return None, holder
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
    handle.flush()
    return handle, None


@contextlib.contextmanager
def subject_locks(work_dir: Path, subjects):
    """Hold the work-dir lock of every subject for the duration of the block.

    Raises
    ------
    LumboError
        Exit 75 (EX_TEMPFAIL), naming the subject, when another run holds one of the locks
        (the locks taken so far are released); exit 73 when the lock cannot be created.
    """
    with contextlib.ExitStack() as stack:
        for subject in subjects:
            try:
                handle, holder = _acquire(lock_path(work_dir, subject))
            except OSError as exc:
                raise LumboError(
                    f"--work-dir {work_dir}: cannot create the lock of sub-{subject}: {exc.strerror}", ExitCode.CANT_CREATE
                ) from None
            if handle is None:
                raise LumboError(
                    f"sub-{subject} is already running in --work-dir {work_dir} ({holder}): "
                    "wait for it to finish or use another work dir",
                    ExitCode.TEMPFAIL,
                )
            stack.enter_context(handle)
        yield
