"""One run per subject and work dir, and per subject and OUTPUT_DIR: exclusive locks, so a
second run says 'already running'.

A lock is an ``flock`` on ``WORK/.locks/sub-XX.lock`` (the work dir's cache) and on
``OUTPUT_DIR/.locks/sub-XX.lock`` (two runs with their own work dirs, e.g. ``$TMPDIR`` per SLURM
job, would otherwise mix their outputs of one subject), which holds ``pid N on HOST`` while a
run has it and is emptied when that run ends. The kernel releases the lock of a run that is
killed once its last process is gone (its Nipype workers die with it, :mod:`.plugins`); the next
run takes it over, saying so when the file still names the run that was killed.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
from pathlib import Path

from ..errors import ExitCode, LumboError

LOGGER = logging.getLogger("lumbo_bids")


def lock_path(folder: Path, subject: str) -> Path:
    """The lock of ``subject`` in a work dir or an OUTPUT_DIR."""
    return Path(folder) / ".locks" / f"sub-{subject}.lock"


def _acquire(path: Path):
    """``(open file holding an exclusive lock on path, None, who held it last and did not
    release it or None)`` or ``(None, who holds it, None)``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        return None, holder, None
    handle.seek(0)
    left_by = handle.read().strip() or None  # a run that ended without emptying it: killed
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
    handle.flush()
    return handle, None, left_by


@contextlib.contextmanager
def _held(handle):
    """Empty the lock file (this run ended as it should), then release the lock."""
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            handle.seek(0)
            handle.truncate()
            handle.flush()
        handle.close()


def _holders(path: Path) -> list[int]:
    """The processes of this machine that have ``path`` open (read from ``/proc``; [] elsewhere)."""
    target, pids = str(Path(path).resolve()), []
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if any(os.readlink(fd) == target for fd in (proc / "fd").iterdir()):
                pids.append(int(proc.name))
    return sorted(pids)


def _dead_holder(holder: str) -> bool:
    """Whether ``holder`` (``pid N on HOST``) names a process of this machine that no longer runs."""
    words = holder.split()
    if len(words) != 4 or words[0] != "pid" or not words[1].isdigit() or words[3] != socket.gethostname():
        return False
    try:
        os.kill(int(words[1]), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def _take(stack: contextlib.ExitStack, folder: Path, option: str, subject: str, advice: str) -> None:
    """Take the lock of ``subject`` in ``folder`` (named ``option`` in messages) into ``stack``."""
    path = lock_path(folder, subject)
    try:
        handle, holder, left_by = _acquire(path)
    except OSError as exc:
        raise LumboError(
            f"{option} {folder}: cannot create the lock of sub-{subject}: {exc.strerror}", ExitCode.CANT_CREATE
        ) from None
    if handle is None:
        if _dead_holder(holder) and (pids := [p for p in _holders(path) if p != os.getpid()]):
            raise LumboError(
                f"sub-{subject} is locked in {option} {folder} by processes left behind by a run that "
                f"was killed ({holder}, no longer running): processes {', '.join(map(str, pids))}; "
                "stop them, then rerun",
                ExitCode.TEMPFAIL,
            )
        raise LumboError(f"sub-{subject} is already running in {option} {folder} ({holder}): {advice}", ExitCode.TEMPFAIL)
    stack.enter_context(_held(handle))
    if left_by:
        LOGGER.warning(
            "sub-%s: taking over the lock in %s %s from a run that ended without releasing it (%s, killed?)%s",
            subject, option, folder, left_by, "; its finished steps are reused" if option == "--work-dir" else "",
        )  # fmt: skip


@contextlib.contextmanager
def subject_locks(work_dir: Path, subjects, output_dir: Path | None = None):
    """Hold the work-dir lock (and with ``output_dir`` the OUTPUT_DIR lock) of every subject for
    the duration of the block.

    Raises
    ------
    LumboError
        Exit 75 (EX_TEMPFAIL), naming the subject and the folder, when another run holds one of
        the locks (the locks taken so far are released); exit 73 when a lock cannot be created.
    """
    with contextlib.ExitStack() as stack:
        for subject in subjects:
            _take(stack, work_dir, "--work-dir", subject, "wait for it to finish or use another work dir")
            if output_dir is not None:
                advice = "wait for it to finish (two runs of one subject into one OUTPUT_DIR would mix their outputs)"
                _take(stack, output_dir, "OUTPUT_DIR", subject, advice)
        yield
