"""Checks made before any work, each failing with one line and a BEP027 code."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from ..errors import ExitCode, LumboError


def check_input_options(config, labels_dir_given: bool) -> None:
    """Options naming inputs: they must exist, and nothing may be written inside BIDS_DIR."""
    if labels_dir_given and not config.labels_dir.is_dir():
        raise LumboError(f"--labels-dir {config.labels_dir} does not exist or is not a folder", ExitCode.NO_INPUT)
    database = config.bids_database_dir
    if database is not None and _inside(database, config.bids_dir):
        raise LumboError(
            f"--bids-database-dir {database} is inside the BIDS dataset {config.bids_dir}, which is never "
            "written to; put it elsewhere (e.g. in the work dir)",
            ExitCode.USAGE,
        )


def _inside(path: Path, root: Path) -> bool:
    path, root = Path(path).resolve(), Path(root).resolve()
    return path == root or root in path.parents


def subject_output_folders(output_dir: Path, subject: str) -> list[Path]:
    """The existing folders a participant run writes into for ``subject``."""
    base = Path(output_dir) / f"sub-{subject}"
    folders = [base, base / "anat", base / "figures", base / "log"]
    folders += [p for s in sorted(base.glob("ses-*")) for p in (s, s / "anat")]
    return [p for p in folders if p.exists() or p.is_symlink()]


def check_writable(folder: Path) -> None:
    """Create and delete a file in ``folder``; one line, exit 73, when that is not possible."""
    if not folder.is_dir():
        raise LumboError(f"cannot write into {folder}: it exists and is not a folder", ExitCode.CANT_CREATE)
    try:
        fd, probe = tempfile.mkstemp(prefix=".lumbo_bids_write_test_", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise LumboError(f"cannot write into {folder}: {exc.strerror}", ExitCode.CANT_CREATE) from None


def check_subject_outputs(output_dir: Path, subjects) -> None:
    """Every existing output folder of every subject must be writable (before any work)."""
    for subject in subjects:
        for folder in subject_output_folders(output_dir, subject):
            check_writable(folder)


def _first_missing(path: Path) -> Path | None:
    """The outermost folder that creating ``path`` would create (None when it exists)."""
    path = Path(path).absolute()
    if path.exists():
        return None
    while not path.parent.exists():
        path = path.parent
    return path


@contextlib.contextmanager
def removed_if_empty_on_error(*paths: Path):
    """Folders that do not exist yet: if the block fails, remove them again when still empty.

    Early failures (a usage error, a filter that selects nothing...) then leave no empty
    OUTPUT_DIR or work dir behind; a folder that received anything is kept.
    """
    created = [p for p in map(_first_missing, paths) if p is not None]
    try:
        yield
    except BaseException:
        for top in created:
            _remove_empty_tree(top)
        raise


def _remove_empty_tree(top: Path) -> None:
    if not top.is_dir():
        return
    for folder, _, _ in sorted(os.walk(top), key=lambda entry: -len(entry[0])):
        with contextlib.suppress(OSError):
            os.rmdir(folder)  # only ever removes empty folders
