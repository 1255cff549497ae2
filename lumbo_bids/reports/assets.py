"""The reports' styles and scripts: files under ``lumbo_bids/data/reports/`` (``subject.css``,
``group.css``, ``study.css``, ``study.js``), inlined into each page so that a page is one file.
Every page (subject, group, study) is built the same way: HTML from Python, its style and script
from these files."""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def asset(name: str) -> str:
    """The text of ``lumbo_bids/data/reports/<name>``."""
    return resources.files("lumbo_bids").joinpath("data", "reports", name).read_text(encoding="utf-8")
