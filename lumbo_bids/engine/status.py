"""The status line: what a long step is doing now (``3/8 images done · sub-01 T2w · segment``).

The engine and the training loop say it here; the command line's console (:mod:`lumbo_bids.cli.console`)
draws it under the log lines on a terminal (:func:`set_sink`) and nowhere else: never in a log file or a pipe.
"""

from __future__ import annotations

from collections.abc import Callable

#: ``extra=`` of a log record that is progress: on a terminal it replaces the status line
STATUS = {"status": True}

_sink: Callable[[str], None] | None = None


def set_sink(sink: Callable[[str], None] | None) -> None:
    """Who draws the status line from now on (None: nobody)."""
    global _sink
    _sink = sink


def show(text: str) -> None:
    """Show ``text`` as the status line (where a sink draws one)."""
    if _sink is not None:
        _sink(text)


def clear() -> None:
    show("")
