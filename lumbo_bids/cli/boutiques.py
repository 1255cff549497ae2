"""The app's Boutiques descriptor (``--bids-exec-spec``), made from the parser itself.

Boutiques (https://boutiques.github.io, schema 0.5) describes a command-line tool for platforms
that run BIDS Apps (CBRAIN, OpenNeuro's compute, ``bosh exec``): every input with its type,
flag and choices, the container image, the exit codes. It is derived from the arguments that
:class:`~.parser.BIDSAppArgumentParser` records, so it cannot drift from the real options.
"""

from __future__ import annotations

import argparse
import re

from .. import __version__
from ..errors import ExitCode

#: what each exit code means (BEP027), for ``error-codes``
EXIT_CODES = {
    ExitCode.FAILURE: "a subject or the fine-tuning failed (one line per failure; crash files in the subject's log)",
    ExitCode.VALIDATION_FAILED: "the BIDS validator rejected the dataset",
    ExitCode.UNKNOWN_LEVEL: "unknown analysis level",
    ExitCode.NOTHING_SELECTED: "no image matches the selection",
    ExitCode.USAGE: "usage error (an option, or an OUTPUT_DIR that is another dataset)",
    ExitCode.BAD_DATA: "bad data (an image, a mask or a model that cannot be used)",
    ExitCode.NO_INPUT: "missing input",
    ExitCode.CANT_CREATE: "an output cannot be created (disk full, read-only, forbidden)",
    ExitCode.TEMPFAIL: "the subject is already running in this work dir or OUTPUT_DIR",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C, SIGTERM, SIGHUP); finished steps are kept",
}
#: path-valued inputs that name where things are written (Boutiques ``String``, not ``File``)
_WRITTEN = {"output_dir", "work_dir", "bids_database_dir"}


def _kind(action: argparse.Action) -> dict:
    """Boutiques ``type`` (and ``integer``) of an argument."""
    from . import arg_types as p

    if action.nargs == 0:
        return {"type": "Flag"}
    if action.type is p.path or action.dest in _WRITTEN:
        return {"type": "String" if action.dest in _WRITTEN else "File"}
    integers = (p.positive_int, p.non_negative_int)
    numbers = (p.positive_float, p.fraction, p.overlap, p.unit)
    if action.type in integers or action.type in numbers:
        return {"type": "Number", "integer": action.type in integers}
    return {"type": "String"}


def _input(action: argparse.Action) -> dict:
    """The Boutiques input of one argument."""
    positional = not action.option_strings
    entry = {
        "id": action.dest,
        "name": action.dest.replace("_", " "),
        "value-key": f"[{action.dest.upper()}]",
        "description": (action.help or action.dest).replace("%%", "%"),
        "optional": not positional,
        **_kind(action),
    }
    if not positional:
        entry["command-line-flag"] = next((o for o in action.option_strings if o.startswith("--")), action.option_strings[0])
    if action.dest == "analysis_level":
        entry["value-choices"] = ["participant", "group"]
    elif action.choices:
        entry["value-choices"] = list(action.choices)
    if action.nargs in ("+", "*") or isinstance(action.nargs, int) and action.nargs > 1:
        entry["list"] = True
        entry["min-list-entries"] = action.nargs if isinstance(action.nargs, int) else int(action.nargs == "+")
        if isinstance(action.nargs, int):
            entry["max-list-entries"] = action.nargs
    # no "default-value": Boutiques would then write every default on the command line, where it
    # would count as typed and override a --config-file; the description says the default instead
    default = action.default
    if entry["type"] != "Flag" and isinstance(default, (str, int, float)) and "(default" not in entry["description"]:
        entry["description"] += f" (default: {default})"
    return entry


def _group_id(title: str) -> str:
    return re.sub(r"[^0-9a-zA-Z]+", "_", title).strip("_").lower()


def descriptor(parser) -> dict:
    """The Boutiques descriptor of ``parser`` (a :class:`~.parser.BIDSAppArgumentParser`)."""
    skipped = {argparse.SUPPRESS, "help", "version"}  # what prints and exits, not what a run takes
    recorded = [(group, a) for group, a in parser.arguments if a.dest not in skipped]
    inputs = [_input(action) for _, action in recorded]
    positional = [i for i in inputs if not i["optional"]]
    optional = [i for i in inputs if i["optional"]]
    groups: dict[str, list[str]] = {}
    for group, action in recorded:
        if group is not None:
            groups.setdefault(group, []).append(action.dest)
    return {
        "name": "lumbo_bids",
        "tool-version": __version__,
        "schema-version": "0.5",
        "description": parser.description,
        "author": "lumbo_bids developers",
        "url": "https://github.com/lumbo-bids/lumbo_bids",
        "command-line": " ".join(["lumbo-bids", *(i["value-key"] for i in positional + optional)]),
        "container-image": {"type": "docker", "image": f"lumbo_bids:{__version__}"},
        "inputs": inputs,
        "groups": [{"id": _group_id(title), "name": title, "members": members} for title, members in groups.items()],
        "error-codes": [{"code": int(code), "description": text} for code, text in EXIT_CODES.items()],
        "suggested-resources": {"cpu-cores": 2, "ram": 8, "walltime-estimate": 1800},
        "tags": {"domain": ["neuroinformatics", "mri", "spinal-cord", "segmentation"], "bids-app": True},
    }
