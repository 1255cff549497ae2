"""The library's domain errors and the exit codes (BIDS Apps draft, BEP027) they map to.

Library code raises the error that says *what* went wrong (:class:`UsageError`,
:class:`MissingInputError`, :class:`InvalidInputError`, :class:`OutputError`, ...), with a
one-line message naming the file; it never chooses an exit code nor names a command-line
option. The CLI adds which option named the file (:func:`named`) and exits with the error's
code (:class:`ExitCode`, one table here).
"""

from __future__ import annotations

import contextlib
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


class UsageError(LumboError):
    """A setting is wrong: an option's value, a file of settings (exit 64)."""

    code = ExitCode.USAGE


class InvalidInputError(LumboError):
    """An input exists but cannot be used: unreadable, inconsistent, the wrong kind (exit 65)."""

    code = ExitCode.BAD_DATA


class MissingInputError(LumboError):
    """An input the run needs does not exist (exit 66)."""

    code = ExitCode.NO_INPUT


class NothingSelectedError(LumboError):
    """The dataset and the selection leave nothing to process (exit 18)."""

    code = ExitCode.NOTHING_SELECTED


class InvalidDatasetError(LumboError):
    """The BIDS validator finds errors in the dataset (exit 16)."""

    code = ExitCode.VALIDATION_FAILED


class OutputError(LumboError):
    """A derivative cannot be written into OUTPUT_DIR (disk full, quota, read-only, permission)."""

    code = ExitCode.CANT_CREATE


@contextlib.contextmanager
def named(option: str):
    """Prefix the message of a :class:`LumboError` raised inside with ``option``: the CLI says
    which of its options named the file (``--search spec.json: not valid JSON``)."""
    try:
        yield
    except LumboError as exc:
        if type(exc).__reduce__ is not LumboError.__reduce__:  # a richer error: keep it whole
            raise
        raise type(exc)(f"{option} {exc}", exc.code) from None


#: ``errno`` values that mean "the output cannot be created" (exit 73) when writing OUTPUT_DIR
OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


def output_error(exc: OSError, path: str | Path | None = None) -> OutputError | None:
    """The one-line :class:`OutputError` for ``exc`` met writing ``path`` (default: the error's
    own file name), or None when ``exc`` is not one of :data:`OUTPUT_ERRNOS`."""
    if exc.errno not in OUTPUT_ERRNOS:
        return None
    reason = exc.strerror or os.strerror(exc.errno)
    return OutputError(f"cannot write {path or exc.filename}: {reason}")
