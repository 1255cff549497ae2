"""Exit codes of the BIDS Apps draft specification (BEP027) and the errors that carry one."""

from __future__ import annotations

import errno
import os
from enum import IntEnum
from pathlib import Path


class ExitCode(IntEnum):
    """BEP027 exit codes (sysexits-like)."""

    OK = 0
    FAILURE = 1
    VALIDATION_FAILED = 16
    UNKNOWN_LEVEL = 17
    NOTHING_SELECTED = 18
    USAGE = 64
    BAD_DATA = 65
    NO_INPUT = 66
    CANT_CREATE = 73
    TEMPFAIL = 75  # EX_TEMPFAIL: another run holds the subject's work dir; retry later
    INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C


class LumboError(Exception):
    """An expected failure: reported as one line, exits with ``code`` (the class's by default)."""

    code = ExitCode.FAILURE

    def __init__(self, message: str, code: ExitCode | None = None):
        super().__init__(message)
        self.code = ExitCode(type(self).code if code is None else code)

    def __str__(self) -> str:  # one line, always
        return " ".join(str(self.args[0]).split())

    def __reduce__(self):  # keeps the code through pickling (Nipype results, worker processes)
        return type(self), (self.args[0], self.code)


class OutputError(LumboError):
    """A derivative cannot be written into OUTPUT_DIR (disk full, quota, read-only, permission)."""

    code = ExitCode.CANT_CREATE


#: ``errno`` values that mean "the output cannot be created" (exit 73) when writing OUTPUT_DIR
OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


def output_error(exc: OSError, path: str | Path | None = None) -> OutputError | None:
    """The one-line :class:`OutputError` for ``exc`` met writing ``path`` (default: the error's
    own file name), or None when ``exc`` is not one of :data:`OUTPUT_ERRNOS`."""
    if exc.errno not in OUTPUT_ERRNOS:
        return None
    reason = exc.strerror or os.strerror(exc.errno)
    return OutputError(f"cannot write {path or exc.filename}: {reason}")
