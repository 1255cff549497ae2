"""The command line's value types (argparse ``type=`` callables): numbers in a range, paths,
memory sizes, choices; shared by the parser, ``--config-file`` checks and the Boutiques descriptor."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from .. import options


def as_number(value: str, kind: type = float):
    """``value`` as a finite ``kind`` (int or float), or an argparse type error."""
    noun = "an integer" if kind is int else "a number"
    fractional = kind is int and isinstance(value, float) and not value.is_integer()
    if isinstance(value, bool) or fractional:  # JSON values of --config-file
        raise argparse.ArgumentTypeError(f"expected {noun}, got {value!r}")
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected {noun}, got {value!r}") from None
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {value!r}")
    return number


def checked(kind: type, low: float | None, high: float | None, closed: tuple[bool, bool], what: str):
    """An argparse ``type`` accepting ``kind`` values in the interval (``closed``: bounds included)."""

    def convert(value: str):
        number = as_number(value, kind)
        too_low = low is not None and (number < low if closed[0] else number <= low)
        too_high = high is not None and (number > high if closed[1] else number >= high)
        if too_low or too_high:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value!r}")
        return number

    convert.__name__ = what  # argparse names the type in some messages
    return convert


positive_int = checked(int, 0, None, (False, False), "a positive integer")
non_negative_int = checked(int, 0, 2**32 - 1, (True, True), "an integer in [0, 2**32)")
positive_float = checked(float, 0, None, (False, False), "a positive number")
fraction = checked(float, 0, 1, (False, False), "a fraction in (0, 1)")
overlap = checked(float, 0, 1, (True, False), "a number in [0, 1)")
unit = checked(float, 0, 1, (True, True), "a number in [0, 1]")


LOSSES = options.CHOICES["loss"]
FREEZE = options.CHOICES["freeze"]


def choice(*names: str):
    def convert(value):
        if value not in names:
            raise argparse.ArgumentTypeError(f"expected one of {', '.join(names)}, got {value!r}")
        return value

    return convert


def patch_size(value) -> tuple[int, ...]:
    if not (isinstance(value, list) and len(value) in (2, 3)):
        raise argparse.ArgumentTypeError(f"expected a list of 2 or 3 positive integers, got {value!r}")
    return tuple(positive_int(v) for v in value)


def model_or_shipped(value) -> Path | None:
    if not isinstance(value, str):
        raise argparse.ArgumentTypeError(f"expected a path or 'shipped', got {value!r}")
    return None if value == "shipped" else path(value)


#: settings a --config-file may hold: the option (dest) each stands for, checked as on the command line
CONFIG_FILE_OPTIONS = {
    "learning_rate": positive_float, "epochs": positive_int, "augmentation": unit, "loss": choice(*LOSSES),
    "steps_per_epoch": positive_int, "batch_size": positive_int, "freeze": choice(*FREEZE),
    "patch_size": patch_size, "init_model": model_or_shipped,
}  # fmt: skip


def memory_gb(value: str) -> float:
    """Accept ``16``, ``16G``, ``16GB``, ``16000M``, ``16000MB`` -> GB."""
    text = value.strip().upper().removesuffix("B")
    scale = 1.0
    if text.endswith("G"):
        text = text[:-1]
    elif text.endswith("M"):
        text, scale = text[:-1], 1 / 1024
    try:
        gb = positive_float(text) * scale
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a positive memory size such as 8G or 8000M, got {value!r}") from None
    if gb < options.MODEL_NODE_MEM_GB:
        raise argparse.ArgumentTypeError(
            f"{value!r} is below the {options.MODEL_NODE_MEM_GB:g}G that one step running a network (segment, "
            f"localise: TensorFlow and the model) is budgeted; give at least {options.MODEL_NODE_MEM_GB:g}G, "
            "or leave --mem out"
        )
    return gb


def path(value: str) -> Path:
    return Path(value).expanduser().absolute()


def label(value: str) -> str:
    return value.removeprefix("sub-")
