"""Exit codes of the BIDS Apps draft specification (BEP027) and the error that carries one."""

from __future__ import annotations

from enum import IntEnum


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
    """An expected failure: reported as one line, exits with ``code``."""

    def __init__(self, message: str, code: ExitCode = ExitCode.FAILURE):
        super().__init__(message)
        self.code = ExitCode(code)

    def __str__(self) -> str:  # one line, always
        return " ".join(str(self.args[0]).split())
