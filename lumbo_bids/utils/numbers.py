"""Numbers as the derivatives write them: never a signed zero.

Two runs of the same computation (natively and in a container, say) may end with ``-1e-17``
in one and ``+1e-17`` in the other; written with three decimals they would read ``-0.000``
and ``0.000``. Every table and JSON writer goes through these helpers so that a value that
is zero at the written precision is always written as ``0``.
"""

from __future__ import annotations

import json
from typing import Any


def format_float(value: float, decimals: int) -> str:
    """Fixed-point text of ``value`` with ``decimals`` digits, without a signed zero.

    Parameters
    ----------
    value : float
        Number to write (Python or numpy float or int).
    decimals : int
        Digits after the decimal point.

    Returns
    -------
    str
        ``f"{value:.{decimals}f}"``, except that a value which rounds to zero (``-0.0``,
        ``-0.0001`` with three decimals...) loses its minus sign: ``0.000``. Non-finite values
        are written as Python writes them (``nan``, ``inf``, ``-inf``).
    """
    text = f"{value:.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def unsigned_zeros(data: Any) -> Any:
    """A copy of a JSON-able structure where every ``-0.0`` is ``0.0``.

    Parameters
    ----------
    data : object
        Dicts, lists, tuples (returned as lists), floats and other JSON values, nested.

    Returns
    -------
    object
        The same structure; floats equal to zero are replaced by ``0.0``, everything else
        is kept as it is.
    """
    if isinstance(data, dict):
        return {key: unsigned_zeros(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [unsigned_zeros(value) for value in data]
    if isinstance(data, float) and data == 0:
        return 0.0
    return data


def dumps_json(data: Any, **kwargs: Any) -> str:
    """:func:`json.dumps` of ``data`` after :func:`unsigned_zeros` (``kwargs`` passed on)."""
    return json.dumps(unsigned_zeros(data), **kwargs)
