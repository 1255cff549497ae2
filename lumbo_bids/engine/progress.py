"""Progress lines: one when an image starts and one when it is done (from Nipype's status
callback), one per training epoch, and how training ended (group level).

On a terminal the step an image is at is shown on a status line redrawn in place
(:mod:`lumbo_bids.cli.console`); elsewhere only plain lines are written.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable

from . import status as status_line

LOGGER = logging.getLogger("lumbo_bids")


class ImageProgress:
    """Nipype ``status_callback`` following each image through its nodes.

    Each image gets a line when its ``announce`` node starts (``image 3/8 · sub-unf01 T2w ·
    segment``, numbered in that order) and one when all its nodes are done; on a terminal the
    status line follows every node.

    Parameters
    ----------
    labels : dict[str, str]
        The name of each image's workflow (one dotted part of its nodes' full names, e.g.
        ``sub_unf01_T2w_wf``) and how to call the image (``sub-unf01 T2w``).
    summary : callable, optional
        ``summary(workflow_name) -> str``: what to add to the image's line when it is done.
    announce : str, optional
        The node whose start is announced (None: only the lines of finished images).
    """

    def __init__(self, labels: dict[str, str], summary: Callable[[str], str] | None = None, announce: str | None = None):
        self.labels = labels
        self.summary = summary
        self.announce = announce
        self.expected: Counter[str] = Counter()
        self.ended: Counter[str] = Counter()
        self.number: dict[str, int] = {}
        self.started: dict[str, float] = {}
        self.done: set[str] = set()

    def expect(self, nodes: Iterable) -> None:
        """Count the nodes of each image in the graph about to run (an image is done when they all are)."""
        self.expected = Counter(key for node in nodes if (key := self.image_of(node)) is not None)

    def image_of(self, node) -> str | None:
        return next((part for part in str(node.fullname).split(".") if part in self.labels), None)

    def __call__(self, node, status: str) -> None:
        key = self.image_of(node)
        if key is None or key in self.done:
            return
        self.started.setdefault(key, time.monotonic())
        if status == "start" and node.name == self.announce and key not in self.number:
            LOGGER.info("%s · %s", self.head(key), node.name, extra=status_line.STATUS)
        if status in ("start", "end"):  # MultiProc says "start" only for nodes it sends to a worker
            status_line.show(f"{len(self.done)}/{len(self.labels)} images done · {self.labels[key]} · {node.name}")
        if status == "end":
            self._end(key)
        elif status == "exception":
            self.done.add(key)
            LOGGER.info("%s · failed at %s", self.head(key), node.name)

    def head(self, key: str) -> str:
        """``image k/N · label``, k counting the images in the order they are first announced."""
        number = self.number.setdefault(key, len(self.number) + 1)
        return f"image {number}/{len(self.labels)} · {self.labels[key]}"

    def _end(self, key: str) -> None:
        self.ended[key] += 1
        if self.ended[key] != self.expected[key]:
            return
        self.done.add(key)
        seconds = time.monotonic() - self.started[key]
        extra = self.summary(key) if self.summary else ""
        LOGGER.info("%s · done in %.0f s%s", self.head(key), seconds, f" · {extra}" if extra else "")


def training_outcome(epochs_run: int, epochs: int, patience: int, best_epoch: int, best_dice: float) -> str:
    """How training ended and which epoch's weights were kept (``best_epoch`` counts from 0)."""
    if best_epoch >= 0 and math.isfinite(best_dice):
        kept = f"kept epoch {best_epoch + 1} (validation Dice {best_dice:.3f})"
    else:
        kept = "kept the last epoch (no validation Dice recorded)"
    if patience > 0 and epochs_run < epochs:
        return f"early stopping after epoch {epochs_run} of {epochs}: no better validation Dice for {patience} epoch(s); {kept}"
    return f"trained {epochs_run} epoch(s); {kept}"


def epoch_progress(epochs: int, steps_per_epoch: int):
    """A Keras callback: one line per epoch (losses, Dice, the best so far), the step on a terminal."""
    import keras

    class EpochProgress(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.best = -math.inf
            self.current = 1
            self.epoch_started = time.monotonic()

        def resume_best(self, best: float) -> None:
            """The best validation Dice of the epochs a resumed run keeps (``train`` says it)."""
            self.best = best

        def on_epoch_begin(self, epoch: int, logs=None) -> None:
            self.current, self.epoch_started = epoch + 1, time.monotonic()

        def on_train_batch_end(self, batch: int, logs=None) -> None:
            status_line.show(f"epoch {self.current}/{epochs} · step {batch + 1}/{steps_per_epoch}")

        def on_epoch_end(self, epoch: int, logs=None) -> None:
            logs = logs or {}
            LOGGER.info("%s", epoch_line(epoch, epochs, logs, self.best, time.monotonic() - self.epoch_started))
            self.best = max(self.best, float(logs.get("val_dice", -math.inf)))

    return EpochProgress()


def epoch_line(epoch: int, epochs: int, logs: dict, best: float, seconds: float) -> str:
    """``epoch 3/30 · loss 0.412 · Dice 0.702 · validation Dice 0.815 (best) · 41 s``."""
    parts = [f"epoch {epoch + 1}/{epochs}"]
    for key, name in (("loss", "loss"), ("dice", "Dice"), ("val_dice", "validation Dice")):
        if key in logs:
            parts.append(f"{name} {float(logs[key]):.3f}")
    if float(logs.get("val_dice", -math.inf)) > best:
        parts[-1] += " (best)"
    return " · ".join([*parts, f"{seconds:.0f} s"])
