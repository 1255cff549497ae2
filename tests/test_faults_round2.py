"""Issue 27: the fault table, round 2 (foreign output folders, signals, killed runs, ratings, --mem).

The same rules as ``test_faults.py`` (whose helpers these tests use): ``run.py`` on a fresh copy
of the example dataset, then the exit code, one line naming the file or option, no traceback,
the input byte-identical, nothing half-written; for the runs that are killed or signalled, no
process of the run left alive (read from ``/proc``) and a plain rerun that succeeds.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_faults import ENV, SUBJECT, Case, mask_of, tree_digest

from lumbo_bids.cli.locks import lock_path


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


# -- case 6: --qc-ratings rows that match no image -------------------------------------------------
def test_ratings_row_rated_fail_that_matches_no_image_is_64(case):
    ratings = case.root / "ratings.tsv"
    ratings.write_text(
        "image\trating\tnote\n"
        f"sub-{SUBJECT}_t2starw\tfail\twrong case\n"  # meant: sub-sctTesting_T2starw
        f"sub-{SUBJECT}_T1w\tpass\t\n"  # matches
        f"sub-sctTestin_T1w\tpass\ttypo\n"
    )
    proc = case.run("--qc-ratings", ratings, "--epochs", 1, "--steps-per-epoch", 1, level="group")
    line = case.check(proc, 64, "lumbo-bids: error:", "--qc-ratings", str(ratings), "row 2", f"sub-{SUBJECT}_t2starw")
    assert "rated fail" in line and f"did you mean sub-{SUBJECT}_T2starw" in line
    warnings = [line for line in proc.stderr.splitlines() if "matches no image" in line and "error" not in line]
    assert len(warnings) == 1 and str(ratings) in warnings[0] and "row 4" in warnings[0] and "sub-sctTestin_T1w" in warnings[0]
    case.check_nothing_created()


def test_ratings_rows_that_match_no_image_are_warned_one_line_each(tmp_path, caplog, ds_spine_mini):
    from types import SimpleNamespace

    from lumbo_bids.group.inputs import check_ratings

    ratings = tmp_path / "ratings.tsv"
    ratings.write_text(
        "image\trating\tnote\n"
        "sub-unf01_T2w\tfail\t\n"  # an image of the dataset, whether selected or not
        "sub-unf01_T2w_run-1\tpass\t\n"
        "sub-ghost_T1w.nii.gz\tunrated\t\n"
    )
    with caplog.at_level("WARNING", logger="lumbo_bids"):
        check_ratings(SimpleNamespace(qc_ratings=ratings, bids_dir=ds_spine_mini))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert all(str(ratings) in line and "matches no image" in line for line in lines)
    assert "row 3: sub-unf01_T2w_run-1" in lines[0] and "did you mean sub-unf01_T2w?" in lines[0]
    assert "row 4: sub-ghost_T1w" in lines[1]


# -- case 4: a tiny --mem --------------------------------------------------------------------------
@pytest.mark.parametrize("mem", ["10M", "1G", "1999M"])
def test_memory_below_one_model_step_is_refused_at_once(case, mem):
    # 10M once made Nipype's scheduler wait for ever (below 0.01 GB it starts no node)
    proc = case.run("--mem", mem, "--nprocs", 2, "--bids-filter-file", case.filter_file("T2starw"), timeout=120)
    line = case.check(proc, 64, "lumbo-bids: error: argument --mem", repr(mem))
    assert "give at least 2G" in line
    case.check_nothing_created()


def test_memory_of_one_model_step_is_accepted(case):
    proc = case.run("--mem", "2G", "--nprocs", 2, "--session-label", "none")  # stops at the selection
    case.check(proc, 18, "lumbo-bids: error:")


# -- cases 1 and 3: killed and signalled runs -------------------------------------------------------
def session_processes(session: int) -> list[int]:
    """The live processes (zombies aside) of the session ``session``, from ``/proc``."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (name)": state, ppid, pgrp, session
        except (OSError, IndexError):
            continue
        if int(fields[3]) == session and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def survivors(session: int, seconds: float = 20) -> list[int]:
    """The processes of ``session`` still alive after ``seconds`` (polled: [] as soon as none is)."""
    deadline = time.monotonic() + seconds
    while (pids := session_processes(session)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return pids


def _finished(result: Path) -> bool:
    """Whether the Nipype result file ``result`` is that of a step that ran to its end (not a
    derivative sink, which runs again on every run, nor the step that the signal stopped)."""
    from nipype.utils.filemanip import loadpkl

    if "ds_wf" in result.parts:
        return False
    runtime = getattr(loadpkl(result), "runtime", None)
    return runtime is not None and not getattr(runtime, "traceback", None)


def _default_sighup() -> None:
    """In the child: SIGHUP as a terminal session has it, whatever this test runner inherited (a
    run started under ``nohup`` ignores SIGHUP, and keeps ignoring it, on purpose)."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def start_run(case: Case, filters: Path):
    """``run.py --nprocs 2`` in a session of its own, returned once its image reached the model
    (the segment node runs in a worker): ``(Popen, stderr lines so far)``."""
    cmd = case.command("--nprocs", 2, "--bids-filter-file", filters)
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=ENV,
                            cwd=case.root, start_new_session=True, preexec_fn=_default_sighup)  # fmt: skip
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if " · segment" in line:
            break
    assert len(session_processes(proc.pid)) >= 2, "".join(seen)  # the main process and its workers
    return proc, seen


def test_killed_run_leaves_no_worker_and_a_rerun_takes_its_lock_over(case):
    filters = case.filter_file("T2starw")
    proc, seen = start_run(case, filters)
    try:
        time.sleep(1)  # the segment node runs in a worker; the main process is done writing the preprocessed image
        os.kill(proc.pid, signal.SIGKILL)  # the main process only, as the out-of-memory killer does
        proc.wait(timeout=60)
        proc.stderr.close()  # not read to its end: a surviving worker would keep it open
        assert survivors(proc.pid) == [], "worker processes outlived the killed run"
    finally:
        for pid in session_processes(proc.pid):  # only when the test has failed
            os.kill(pid, signal.SIGKILL)
    assert lock_path(case.work, SUBJECT).read_text().startswith("pid ")  # the killed run's, never emptied
    rerun = case.run("--nprocs", 2, "--bids-filter-file", filters)  # no process touched by hand
    line = case.check(rerun, 0, f"sub-{SUBJECT}", "taking over the lock", str(case.work))
    assert f"pid {proc.pid} " in line
    assert mask_of(case.out, "T2starw").is_file()
    assert lock_path(case.work, SUBJECT).read_text() == ""  # released as it should: the next run says nothing
    again = case.run("--nprocs", 1, "--bids-filter-file", filters)
    assert again.returncode == 0 and "taking over" not in again.stderr, again.stderr[-4000:]


@pytest.mark.parametrize(
    ("signum", "to_group"),
    [(signal.SIGTERM, False), (signal.SIGHUP, True)],
    ids=["sigterm-to-main", "sighup-to-group"],  # kill PID / SLURM at the walltime; a closed terminal
)
def test_sigterm_and_sighup_stop_the_run_like_ctrl_c(case, signum, to_group):
    filters = case.filter_file("T2starw")
    proc, seen = start_run(case, filters)
    try:
        (os.killpg if to_group else os.kill)(proc.pid, signum)
        _, rest = proc.communicate(timeout=120)
        left = survivors(proc.pid, seconds=5)
    finally:
        for pid in session_processes(proc.pid):  # only when the test has failed
            os.kill(pid, signal.SIGKILL)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, "", "".join(seen) + rest)
    name = signal.Signals(signum).name
    case.check(done, 130, f"lumbo-bids: error: interrupted by {name}", "rerun to resume")
    assert "KeyboardInterrupt" not in done.stderr
    assert left == [], "worker processes outlived the run"
    assert (case.out / "qc" / "index.html").is_file()  # what was done is indexed: a study page, a report
    assert (case.out / f"sub-{SUBJECT}.html").is_file()
    finished = {p: p.stat().st_mtime_ns for p in case.work.rglob("result_*.pklz") if _finished(p)}
    assert finished, "no step was kept"
    rerun = case.run("--nprocs", 2, "--bids-filter-file", filters)
    assert rerun.returncode == 0 and "Traceback" not in rerun.stderr, rerun.stderr[-4000:]
    assert "taking over" not in rerun.stderr  # the interrupted run released its lock
    assert mask_of(case.out, "T2starw").is_file()
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # the finished steps were reused


def test_lock_held_by_processes_a_killed_run_left_names_them(tmp_path):
    from lumbo_bids.cli.locks import subject_locks
    from lumbo_bids.errors import LumboError

    path = lock_path(tmp_path, SUBJECT)
    path.parent.mkdir(parents=True)
    dead = max(int(p.name) for p in Path("/proc").glob("[0-9]*")) + 100000
    path.write_text(f"pid {dead} on {os.uname().nodename}")  # a run that was killed, its pid now free
    holder = subprocess.Popen(  # a worker that outlived it, as before issue 27: it holds the lock
        [sys.executable, "-c", f"import fcntl, sys, time; f = open({str(path)!r}); fcntl.flock(f, fcntl.LOCK_EX); print(1, flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        holder.stdout.readline()
        with pytest.raises(LumboError, match=rf"left behind by a run that was killed .*processes {holder.pid};") as error:
            with subject_locks(tmp_path, [SUBJECT]):
                pass
        assert error.value.code == 75
    finally:
        holder.kill()
        holder.wait()
    with subject_locks(tmp_path, [SUBJECT]):  # free again: taken over
        assert path.read_text().startswith(f"pid {os.getpid()} ")
    assert path.read_text() == ""


# -- case 10: failed group checks leave no new OUTPUT_DIR or work dir -------------------------------
@pytest.mark.parametrize(
    ("args", "code", "needles"),
    [
        (("--validation-subjects", "ghost"), 64, ("--validation-subjects ghost",)),
        (("--participant-label", SUBJECT), 65, ("at least 2 subjects", SUBJECT)),
        (("--learning-curve", "--search", "SPEC"), 64, ("--search and --learning-curve",)),
    ],
    ids=["unknown-validation-subject", "one-subject", "search-and-learning-curve"],
)
def test_failed_group_checks_leave_nothing(case, args, code, needles):
    spec = case.root / "spec.json"
    spec.write_text(json.dumps({"space": {"learning_rate": [1e-4]}}))
    args = [spec if a == "SPEC" else a for a in args]
    proc = case.run(*args, "--epochs", 1, "--steps-per-epoch", 1, level="group", subject=False)
    case.check(proc, code, "lumbo-bids: error:", *needles)
    case.check_nothing_created()  # not even group/annotate_next.tsv or the study page


# -- case 10: silent drops ---------------------------------------------------------------------------
def test_requested_participant_without_an_image_is_named(case):
    # sctLumbar has a T2w image only: the filter leaves it nothing
    proc = case.run("--participant-label", "sctLumbar", SUBJECT, "--nprocs", 1, "--bids-filter-file",
                    case.filter_file("T2starw"), subject=False)  # fmt: skip
    case.check(proc, 0, "sub-sctLumbar", "--participant-label", "no anatomical image")
    assert mask_of(case.out, "T2starw").is_file()


def test_two_manual_masks_for_one_image_say_which_is_used(case):
    import nibabel as nib
    import numpy as np
    from test_faults import image_of, manual_mask_of, sidecar_of

    manual = manual_mask_of(case, "T2starw")
    legacy = manual.with_name(manual.name.replace("_label-SC_seg", "_seg-manual"))
    img = nib.load(manual)
    nib.save(nib.Nifti1Image(np.roll(np.asanyarray(img.dataobj), 6, axis=0), img.affine, img.header), legacy)  # another cord
    proc = case.run("--nprocs", 1, "--bids-filter-file", case.filter_file("T2starw"))
    line = case.check(proc, 0, str(image_of(case, "T2starw")), "2 manual masks")
    assert f"using {manual.name}, not {legacy.name}" in line
    evaluation = mask_of(case.out, "T2starw").name.replace("_mask.nii.gz", "_evaluation.json")
    assert json.loads((case.out / f"sub-{SUBJECT}" / "anat" / evaluation).read_text())["Dice"] > 0.8  # scored on the first
    assert sidecar_of(mask_of(case.out, "T2starw")).is_file()


def test_numpy_warnings_reach_the_log_file_not_the_terminal(case):
    import nibabel as nib
    import numpy as np
    from test_faults import image_of

    image = image_of(case, "T1w")  # complex voxels: nibabel's ComplexWarning when they are read as real
    img = nib.load(image)
    header = img.header.copy()
    header.set_data_dtype(np.complex64)
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj).astype(np.complex64), img.affine, header), image)
    proc = case.run("--nprocs", 1, "--bids-filter-file", case.filter_file("T1w"))
    case.check(proc, 0, "done in")
    assert "Warning" not in proc.stderr and "arr = arr.astype" not in proc.stderr, proc.stderr[-4000:]
    log = next((case.work / "logs").glob("*.log")).read_text()
    assert "ComplexWarning: Casting complex values to real" in log
    assert mask_of(case.out, "T1w").is_file()


# -- case 11: OUTPUT_DIR or the work dir is a file ---------------------------------------------------
@pytest.mark.parametrize("which", ["output", "work", "output-parent"])
def test_output_or_work_dir_that_is_a_file_is_named_in_one_line(case, which):
    target = {"output": case.out, "work": case.work, "output-parent": case.root / "afile"}[which]
    target.write_text("not a folder\n")
    if which == "output-parent":
        case.out = target / "out"
    proc = case.run()
    line = one_line(case, proc, 73, str(target), "is a file, not a folder")
    assert "File exists" not in proc.stderr and "Not a directory" not in line
    assert target.read_text() == "not a folder\n"


def test_progress_labels_tell_sessions_and_acquisitions_apart():
    from lumbo_bids.utils.bids import AnatInput

    def label(name, session=None):
        return AnatInput(Path(f"/d/sub-01/anat/{name}.nii.gz"), "01", session, name.split("_")[-1]).label

    assert label("sub-01_ses-01_T2w", "01") != label("sub-01_ses-02_T2w", "02")
    assert label("sub-01_ses-02_acq-sag_run-2_T2w", "02") == "sub-01 ses-02 acq-sag run-2 T2w"
    assert label("sub-unf01_T2star") == "sub-unf01 T2starw"  # the contrast, as before


# -- case 10: float64 values beyond float32 ---------------------------------------------------------
def test_float64_values_beyond_float32_are_named_not_called_empty(tmp_path):
    import nibabel as nib
    import numpy as np

    from lumbo_bids.utils.images import ImageError, read_volume

    data = np.full((8, 8, 8), 1e300, dtype=np.float64)
    data[2:4] = 3e300
    path = tmp_path / "huge.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    with pytest.raises(ImageError, match=r"huge\.nii\.gz: values up to 3e\+300 exceed the float32 range"):
        read_volume(path)
    fine = tmp_path / "fine.nii.gz"
    nib.save(nib.Nifti1Image(data / 1e290, np.eye(4)), fine)
    assert read_volume(fine)[0].max() == pytest.approx(3e10)


# -- case 8: weights of the wrong shape ------------------------------------------------------------
def test_weights_that_do_not_fit_the_network_are_refused_at_start_up(case):
    from lumbo_bids.model.artifact import sha256_file
    from lumbo_bids.model.selection import SHIPPED_SEGMENTATION

    model = case.root / "model"
    shutil.copytree(SHIPPED_SEGMENTATION, model)
    weights = model / "weights.weights.h5"  # another network's weights, with the checksum recomputed
    shutil.copyfile(SHIPPED_SEGMENTATION.parent / "cord_localiser" / "weights.weights.h5", weights)
    manifest = json.loads((model / "model.json").read_text())
    manifest["files"]["weights.weights.h5"] = sha256_file(weights)
    (model / "model.json").write_text(json.dumps(manifest))
    proc = case.run("--model", model, "--bids-filter-file", case.filter_file("T2w"), timeout=300)
    line = one_line(case, proc, 65, str(model), "weights do not fit")
    assert "lumbo-bids: error:" in line
    case.check_nothing_created()  # refused before any folder, let alone any preprocessing


# -- case 9: a field of view smaller than a cord -----------------------------------------------------
def test_tiny_field_of_view_is_warned_and_its_mask_flagged(case):
    import nibabel as nib
    from test_faults import image_of, manual_mask_of, sidecar_of

    source = image_of(case, "T2w")
    img = nib.load(source)
    centre = [s // 2 for s in img.shape[:3]]
    box = tuple(slice(c - 4, c + 4) for c in centre)  # 8 x 8 x 8 voxels about the cord, affine kept right
    for path in (source, manual_mask_of(case, "T2w")):  # the image and its manual mask alike
        tiny = nib.load(path).slicer[box]
        nib.save(nib.Nifti1Image(np.asarray(tiny.dataobj), tiny.affine, tiny.header), path)
    proc = case.run("--bids-filter-file", case.filter_file("T2w"), timeout=600)
    line = case.check(proc, 0, source.name, "field of view")
    assert "narrower than a spinal cord" in line and "left-right" in line
    mask = mask_of(case.out, "T2w")
    marked = int(np.count_nonzero(nib.load(mask).get_fdata()))
    meta = json.loads(sidecar_of(mask).read_text())
    # nothing that passes for a cord: an empty mask (the ensemble shipped before) or a speck far
    # below a cord's cross-section (the distilled network: one voxel), flagged either way
    assert nib.load(mask).shape == (8, 8, 8) and marked <= 8
    flag = "empty_mask" if marked == 0 else "csa_out_of_range"
    assert flag in meta["QCFlags"] and (marked > 0 or meta["QCMeasures"]["slices_with_cord"] == 0)
    assert "narrower than a spinal cord" in meta["FieldOfViewWarning"]
    run = next(line.split(" run ")[-1] for line in proc.stderr.splitlines() if "participant level" in line)
    assert meta["RunID"] == run.strip()  # every sidecar names the run that wrote it (case 5)


# -- case 5: two runs of one subject into one OUTPUT_DIR, each with its own work dir --------------
def test_a_second_run_into_the_same_output_dir_is_refused_whatever_its_work_dir(case):
    import fcntl
    import socket

    path = lock_path(case.out, SUBJECT)  # as a first run (own work dir, e.g. $TMPDIR of its job) holds it
    path.parent.mkdir(parents=True)
    with open(path, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write(f"pid {os.getpid()} on {socket.gethostname()}")
        held.flush()
        proc = case.run("--nprocs", 1, "--bids-filter-file", case.filter_file("T2starw"))
    line = case.check(proc, 75, f"sub-{SUBJECT}", "already running in OUTPUT_DIR", str(case.out))
    assert f"pid {os.getpid()} " in line and "mix their outputs" in line
    assert not (case.out / f"sub-{SUBJECT}").exists()  # refused before any work
    assert lock_path(case.work, SUBJECT).read_text() == ""  # its work-dir lock released again


def test_after_an_interrupted_group_run_the_advice_is_resume():
    """A participant rerun resumes by itself; the group level's training only with --resume."""
    from lumbo_bids.cli.run import interrupted_advice

    assert "rerun with --resume" in interrupted_advice("group") and "plain rerun trains again" in interrupted_advice("group")
    assert interrupted_advice("participant").endswith("rerun to resume") and "--resume" not in interrupted_advice("participant")
