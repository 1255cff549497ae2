"""Command-line behaviour, exercised as a user would: ``python run.py ...`` in a subprocess."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lumbo_bids import __version__

REPO = Path(__file__).resolve().parents[1]
RUN = [sys.executable, str(REPO / "run.py")]


def run_cli(*args, cwd=None, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([*RUN, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout)


def error_line(proc) -> str:
    """The app's own error line (exactly one), e.g. 'lumbo-bids: error: ...'."""
    lines = [line for line in proc.stderr.splitlines() if line.startswith("lumbo-bids: error:")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.fixture()
def dataset_copy(ds_spine_mini, tmp_path) -> Path:
    dst = tmp_path / "ds"
    shutil.copytree(ds_spine_mini, dst)
    return dst


def test_version():
    proc = run_cli("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"lumbo_bids v{__version__}"


def test_usage_error_is_64(tmp_path):
    proc = run_cli()
    assert proc.returncode == 64
    assert "the following arguments are required" in proc.stderr
    proc = run_cli(tmp_path, tmp_path / "out", "participant", "--nprocs", "zero")
    assert proc.returncode == 64


def test_unknown_level_is_17(ds_spine_mini, tmp_path):
    proc = run_cli(ds_spine_mini, tmp_path / "out", "session", "-w", tmp_path / "work")
    assert proc.returncode == 17
    assert "unknown analysis level 'session'" in error_line(proc)


def test_missing_bids_dir_is_66(tmp_path):
    proc = run_cli(tmp_path / "nope", tmp_path / "out", "participant", "-w", tmp_path / "work")
    assert proc.returncode == 66
    assert str(tmp_path / "nope") in error_line(proc)


def test_output_inside_bids_refused(ds_spine_mini, tmp_path):
    for out in (ds_spine_mini, ds_spine_mini / "sub-unf01" / "out"):
        proc = run_cli(ds_spine_mini, out, "participant", "-w", tmp_path / "work")
        assert proc.returncode == 64
        line = error_line(proc)
        assert str(ds_spine_mini / "derivatives" / "lumbo_bids") in line
    assert not (ds_spine_mini / "sub-unf01" / "out").exists()


def test_work_dir_inside_bids_refused(ds_spine_mini, tmp_path):
    proc = run_cli(ds_spine_mini, tmp_path / "out", "participant", "-w", ds_spine_mini / "work")
    assert proc.returncode == 64
    assert "--work-dir" in error_line(proc)
    assert not (ds_spine_mini / "work").exists()


def test_unknown_participant_labels_listed(ds_spine_mini, tmp_path):
    proc = run_cli(
        ds_spine_mini, tmp_path / "out", "participant", "-w", tmp_path / "work",
        "--participant-label", "sub-unf01", "ghost", "sub-zombie", "--skip-bids-validation",
    )  # fmt: skip
    assert proc.returncode == 64
    line = error_line(proc)
    assert "ghost, zombie" in line and "unf01" in line


def test_broken_dataset_description_is_65(dataset_copy, tmp_path):
    (dataset_copy / "dataset_description.json").write_text("{ not json")
    proc = run_cli(dataset_copy, tmp_path / "out", "participant", "-w", tmp_path / "work")
    assert proc.returncode == 65
    assert "dataset_description.json is not valid JSON" in error_line(proc)


def test_filters_selecting_nothing_is_18(ds_spine_mini, tmp_path):
    filters = tmp_path / "filters.json"
    filters.write_text(json.dumps({"anat": {"suffix": "FLAIR"}}))
    proc = run_cli(
        ds_spine_mini, tmp_path / "out", "participant", "-w", tmp_path / "work",
        "--bids-filter-file", filters, "--skip-bids-validation",
    )  # fmt: skip
    assert proc.returncode == 18
    assert "selected no anatomical image" in error_line(proc)


def test_invalid_dataset_fails_validation_16(dataset_copy, tmp_path):
    # a file that is not BIDS at all inside a subject folder is a validator error
    (dataset_copy / "sub-unf01" / "anat" / "notes_about_scan.nii.gz").write_bytes(b"junk")
    proc = run_cli(dataset_copy, tmp_path / "out", "participant", "-w", tmp_path / "work", "--participant-label", "unf01")
    assert proc.returncode == 16
    assert "BIDS validation" in error_line(proc)
    # restricted to the selected subjects: another subject validates fine and gets past validation
    proc = run_cli(
        dataset_copy, tmp_path / "out2", "participant", "-w", tmp_path / "work",
        "--participant-label", "sctTesting", "--bids-filter-file", _nothing_filter(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 18, proc.stderr


def _nothing_filter(tmp_path: Path) -> Path:
    path = tmp_path / "nothing.json"
    path.write_text(json.dumps({"anat": {"suffix": "FLAIR"}}))
    return path


def test_unwritable_output_is_73(ds_spine_mini, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = run_cli(ds_spine_mini, blocker / "out", "participant", "-w", tmp_path / "work", "--skip-bids-validation")
    assert proc.returncode == 73
    assert "OUTPUT_DIR" in error_line(proc)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        ("lumbo_bids.errors.OutputError: cannot write /out/sub-01_mask.nii.gz: No space left on device", 73),
        ("lumbo_bids.utils.images.ImageError: /in/sub-01_T2w.nii.gz: the image is empty (all zeros)", 1),
    ],
)
def test_crash_summary_gives_the_message_and_its_exit_code(tmp_path, error, code):
    from lumbo_bids.participant import summarise_crash

    crash = tmp_path / "crash-20250101-000000-user-ds_mask-x.txt"
    crash.write_text(f"Node: lumbo_bids_wf.sub_01_wf.ds_mask\nTraceback:\n\tTraceback (most recent call last):\n\t{error}\n")
    failure = summarise_crash(crash)
    assert failure.text == f"lumbo_bids_wf.sub_01_wf.ds_mask: {error.split(': ', 1)[1]}"
    assert failure.code == code


def test_named_prefixes_the_option_and_keeps_type_and_code():
    from lumbo_bids.errors import ExitCode, MissingInputError, UsageError, named

    with pytest.raises(UsageError) as error, named("--search"):
        raise UsageError("spec.json: not valid JSON")
    assert str(error.value) == "--search spec.json: not valid JSON" and error.value.code == ExitCode.USAGE
    with pytest.raises(MissingInputError) as error, named("--bids-filter-file"):
        raise MissingInputError("f.json does not exist")
    assert error.value.code == ExitCode.NO_INPUT and str(error.value).startswith("--bids-filter-file f.json")
