"""Issue 27: the fault table, round 2 (foreign output folders, signals, killed runs, ratings, --mem).

The same rules as ``test_faults.py`` (whose helpers these tests use): ``run.py`` on a fresh copy
of the example dataset, then the exit code, one line naming the file or option, no traceback,
the input byte-identical, nothing half-written; for the runs that are killed or signalled, no
process of the run left alive (read from ``/proc``) and a plain rerun that succeeds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_faults import SUBJECT, Case, tree_digest


@pytest.fixture()
def case(ds_spine_mini, tmp_path) -> Case:
    return Case(ds_spine_mini, tmp_path)


def one_line(case: Case, proc, code: int, *needles: str) -> str:
    """:meth:`Case.check` without its look at OUTPUT_DIR (here a folder the run must not touch)."""
    assert proc.returncode == code, proc.stderr[-4000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
    lines = [line for line in proc.stderr.splitlines() if all(n in line for n in needles)]
    assert len(lines) == 1, f"expected one line with {needles}:\n{proc.stderr[-4000:]}"
    assert tree_digest(case.bids) == case.before, "the input dataset was modified"
    return lines[0]


# -- case 2: OUTPUT_DIR is another dataset ---------------------------------------------------------
def _foreign_output(case: Case, kind: str) -> tuple[Path, list[str], tuple[str, ...]]:
    """``(OUTPUT_DIR, extra options, what the error line must name)`` for each kind of foreign folder."""
    if kind == "raw-dataset":  # another raw BIDS dataset
        out = case.root / "other_raw"
        shutil.copytree(case.bids, out, ignore=shutil.ignore_patterns("derivatives"))
        return out, [], ("dataset_description.json", "raw dataset")
    if kind == "other-derivative":  # another tool's derivatives
        out = case.root / "fmriprep"
        (out / f"sub-{SUBJECT}").mkdir(parents=True)
        description = {"Name": "x", "BIDSVersion": "1.10.0", "DatasetType": "derivative", "GeneratedBy": [{"Name": "fMRIPrep"}]}
        (out / "dataset_description.json").write_text(json.dumps(description))
        return out, [], ("dataset_description.json", "'fMRIPrep'")
    labels = case.root / "labels"  # a --labels-dir outside BIDS_DIR (inside it, it is refused already)
    shutil.move(case.bids / "derivatives" / "labels", labels)
    if kind == "labels-dir":
        return labels, ["--labels-dir", labels], ("is the --labels-dir", str(labels))
    if kind == "contains-labels-dir":
        container = case.root / "derivatives"
        container.mkdir()
        shutil.move(labels, container / "labels")
        return container, ["--labels-dir", container / "labels"], ("contains the --labels-dir", str(container / "labels"))
    if kind == "inside-labels-dir":
        return labels / "lumbo", ["--labels-dir", labels], ("is inside the --labels-dir", str(labels))
    if kind == "contains-bids-dir":
        return case.root, [], ("contains the BIDS dataset", str(case.bids))
    assert kind == "bids-dir"  # refused before this issue: here for "nothing written"
    return case.bids, [], ("is the BIDS dataset itself",)


@pytest.mark.parametrize(
    "kind",
    [
        "raw-dataset",
        "other-derivative",
        "labels-dir",
        "contains-labels-dir",
        "inside-labels-dir",
        "contains-bids-dir",
        "bids-dir",
    ],
)
def test_output_dir_that_is_another_dataset_is_refused(case, kind):
    out, options, needles = _foreign_output(case, kind)
    case.out = out
    filters = case.filter_file("T2starw")
    foreign_before = tree_digest(out) if out.exists() else None
    labels = next((Path(v) for k, v in zip(options, options[1:]) if k == "--labels-dir"), None)
    labels_before = tree_digest(labels) if labels else None
    proc = case.run("--nprocs", 1, "--bids-filter-file", filters, *options)
    one_line(case, proc, 64, "lumbo-bids: error:", "OUTPUT_DIR", str(out), *needles)
    assert (tree_digest(out) if out.exists() else None) == foreign_before  # not even a probe file
    assert labels is None or tree_digest(labels) == labels_before
    assert not case.work.exists()  # nothing created before the refusal


def test_output_dir_written_by_lumbo_bids_is_accepted(case):
    case.out.mkdir()
    description = {"Name": "earlier run", "DatasetType": "derivative", "GeneratedBy": [{"Name": "lumbo_bids", "Version": "0"}]}
    (case.out / "dataset_description.json").write_text(json.dumps(description))
    proc = case.run("--nprocs", 1, "--session-label", "none")  # stops at the selection, after the path checks
    case.check(proc, 18, "lumbo-bids: error:")
