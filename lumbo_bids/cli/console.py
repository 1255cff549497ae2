"""What reaches the terminal, and what only the log file gets.

By default (no ``-v``) stderr shows our own INFO lines (one per image started and finished,
the reports), and warnings and errors; Nipype's INFO detail, Python warnings (numpy's
``RuntimeWarning``, ``ComplexWarning``), TensorFlow's Python warnings and its C++ notices need ``-v`` (``-vv``: Nipype's and the libraries' debug output too). Everything
our loggers and Nipype say also goes to ``WORK/logs/<run>.log`` (:func:`log_to_file`), as plain
lines: a progress line is redrawn in place only on a terminal, never written to a file or pipe.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import logging
import logging.handlers
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from ..engine.status import STATUS, set_sink  # noqa: F401  (STATUS: re-exported for callers of console)

LOGGER = logging.getLogger("lumbo_bids")
_FORMAT = "%(asctime)s [%(name)s] %(levelname)s: %(message)s"
_DATEFMT = "%y%m%d-%H:%M:%S"
_CLEAR = "\r\x1b[K"  # back to the line's start, erase it (terminals only)
#: lowest level shown on the terminal, by logger family, for -v counts 0, 1, 2 and more
_THRESHOLDS = {
    "lumbo_bids": (logging.INFO, logging.DEBUG, logging.DEBUG),
    # Nipype's warnings and errors about a failed node (crash file, "could not run node"...) are
    # said again, in one line naming the input, by lumbo_bids: the terminal shows them with -v
    "nipype": (logging.CRITICAL, logging.INFO, logging.DEBUG),
    "tensorflow": (logging.ERROR, logging.WARNING, logging.DEBUG),  # e.g. tf.function retracing
    "absl": (logging.ERROR, logging.WARNING, logging.DEBUG),
    # Python warnings (numpy's RuntimeWarning, ComplexWarning...), captured as log records: the
    # log file always has them, the terminal with -v (a sidecar or one line reports what matters)
    "py.warnings": (logging.ERROR, logging.WARNING, logging.DEBUG),
    "": (logging.WARNING, logging.WARNING, logging.INFO),  # every other library
}
#: libraries whose INFO/DEBUG records are not even made (they would flood the log file)
_NOISY = ("bids", "matplotlib", "h5py", "PIL", "absl", "tensorflow", "filelock")


def _family(name: str) -> str:
    return next((f for f in _THRESHOLDS if f and (name == f or name.startswith(f + "."))), "")


class VerbosityFilter(logging.Filter):
    """Lets a record through when its logger family shows its level at this verbosity."""

    def __init__(self, verbosity: int):
        super().__init__()
        self.index = min(max(verbosity, 0), 2)

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= _THRESHOLDS[_family(record.name)][self.index]


class PlainFormatter(logging.Formatter):
    """``message`` for INFO, ``warning: message`` above it (with the logger of another library)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno < logging.WARNING:
            return text
        where = "" if _family(record.name) == "lumbo_bids" else f" [{record.name}]"
        return f"{record.levelname.lower()}{where}: {text}"


class ConsoleHandler(logging.StreamHandler):
    """A stream handler with one status line, redrawn under the other lines on a terminal.

    Off a terminal (a pipe, a file) a status record is a plain line like any other and
    :meth:`set_status` does nothing: no carriage return or escape sequence is ever written there.
    """

    def __init__(self, stream=None):
        super().__init__(stream if stream is not None else sys.stderr)
        self.tty = _isatty(self.stream)
        self.status = ""
        self._pid = os.getpid()  # forked workers inherit the handler; only this process draws

    def set_status(self, text: str) -> None:
        if not self.tty:
            return
        self.acquire()
        try:
            self.status = text
            self._write("")
        finally:
            self.release()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self.tty and getattr(record, "status", False):
                self.status = record.getMessage()
                self._write("")
            else:
                self._write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)

    def _write(self, text: str) -> None:
        if self.tty:
            drawn = self.status if os.getpid() == self._pid else ""
            width = shutil.get_terminal_size().columns - 1
            text = _CLEAR + text + drawn[:width]
        self.stream.write(text)
        self.flush()


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def setup(verbosity: int, stream=None) -> ConsoleHandler:
    """Terminal output for ``-v`` count ``verbosity``; records are kept for :func:`log_to_file`."""
    root = logging.getLogger()
    for handler in list(root.handlers):  # a previous run's, in this process
        if isinstance(handler, ConsoleHandler | RunLogHandler | logging.handlers.MemoryHandler):
            root.removeHandler(handler)
            handler.close()
    console = ConsoleHandler(stream)
    console.addFilter(VerbosityFilter(verbosity))
    console.setFormatter(PlainFormatter() if verbosity == 0 else logging.Formatter(_FORMAT, _DATEFMT))
    buffer = logging.handlers.MemoryHandler(capacity=10_000, flushLevel=logging.CRITICAL + 1)
    root.addHandler(console)
    root.addHandler(buffer)
    set_sink(console.set_status)  # the engine's status line (lumbo_bids.engine.status)
    root.setLevel(logging.DEBUG if verbosity >= 2 else logging.INFO)
    LOGGER.setLevel(logging.DEBUG)
    logging.captureWarnings(True)  # "file:line: RuntimeWarning: ..." and its source line, off stderr
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.DEBUG if verbosity >= 2 else logging.WARNING)
    return console


def _root_handler(kind: type):
    return next((h for h in logging.getLogger().handlers if isinstance(h, kind)), None)


class RunLogHandler(logging.FileHandler):
    """The run's log file."""


def log_to_file(path) -> None:
    """From now on every record goes to ``path`` too (the records since :func:`setup` first)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    handler = RunLogHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(_FORMAT, _DATEFMT))
    root = logging.getLogger()
    buffer = _root_handler(logging.handlers.MemoryHandler)
    if buffer is not None:
        buffer.setTarget(handler)
        buffer.flush()
        root.removeHandler(buffer)
        buffer.close()
    root.addHandler(handler)


def status(text: str) -> None:
    """Show ``text`` as the status line (terminals only; nothing elsewhere)."""
    if (console := _root_handler(ConsoleHandler)) is not None:
        console.set_status(text)


def clear_status() -> None:
    status("")


# -- TensorFlow's C++ notices ---------------------------------------------------------------
#: what TensorFlow's C++ code prints while it loads: absl's pre-initialisation warning, glog-style
#: I/W/E lines (oneDNN's port.cc, cpu_feature_guard), and the latter's continuation line
_NOTICE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\)|[IWE]\d{4} [\d:.]+ +\d+ \S+:\d+\]|To enable the following instructions)"
)


def quiet_tensorflow(verbosity: int) -> None:
    """Keep TensorFlow's C++ notices off the terminal at verbosity 0, in this process and in the
    worker processes it forks (set before TensorFlow is imported).

    ``TF_CPP_MIN_LOG_LEVEL`` (a value set by the user wins) silences what TensorFlow logs once
    running; what its libraries print while loading ignores it, so the first ``import
    tensorflow`` runs with stderr captured (:class:`_CapturedImport`) and the notices go to the
    log file.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3" if verbosity == 0 else "0")
    if verbosity == 0 and not any(isinstance(f, _CapturedImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _CapturedImport())


class _CapturedImport(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` as the other finders do, and loads it with fd 2 captured."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "tensorflow":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _CapturingLoader(spec.loader)
                return spec
        return None


class _CapturingLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def __getattr__(self, name):  # resource readers and the like: the real loader's
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        with native_stderr_filtered():
            self.loader.exec_module(module)


@contextlib.contextmanager
def native_stderr_filtered():
    """Capture file descriptor 2 (C/C++ code writes there directly) during the block; then
    pass every line on to stderr except TensorFlow's notices, which are logged at DEBUG."""
    try:
        sink = tempfile.TemporaryFile()
    except OSError:  # nowhere to capture to: let the notices through
        yield
        return
    with sink:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            _replay(sink.read().decode("utf-8", errors="replace"))


def _replay(text: str) -> None:
    for line in text.splitlines():
        if _NOTICE.match(line):
            logging.getLogger("lumbo_bids.tensorflow").debug("%s", line)
        else:
            sys.stderr.write(line + "\n")
    sys.stderr.flush()
