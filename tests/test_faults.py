"""Issue 14: every bad input and failure gets one line, a BEP027 code, and nothing is lost.

Each case runs ``run.py`` (as a user would) on a fresh copy of the example dataset and checks
the exit code, the one line that names the file or option, that no traceback reaches stderr at
the default verbosity, that the input tree is byte-identical afterwards, and that the outputs
are whole (every mask has its sidecar, no temporary file is left).  The runs are kept small:
one subject, one or two of its images, ``--nprocs 1`` where the case allows.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import REPO
from scipy import ndimage

from lumbo_bids.cli.locks import lock_path
from lumbo_bids.metrics import dice
from lumbo_bids.model.selection import SHIPPED_SEGMENTATION

RUN = [sys.executable, str(REPO / "run.py")]
SUBJECT = "sctTesting"
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


# -- helpers ---------------------------------------------------------------------------------
def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (a symlink by its target, without following it)."""
    digest = {}
    for folder, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            path = Path(folder) / name
            key = str(path.relative_to(root))
            if path.is_symlink():
                digest[key] = "link:" + os.readlink(path)
            elif path.is_file():
                digest[key] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                digest[key] = "dir"
    return digest


class Case:
    """A fresh, writable copy of the example dataset, with OUTPUT_DIR and work dir beside it."""

    def __init__(self, source: Path, root: Path):
        self.root = root
        self.bids = root / "ds"
        shutil.copytree(source, self.bids, symlinks=True)
        for folder, _, _ in os.walk(self.bids):
            os.chmod(folder, 0o755)
        for path in self.bids.rglob("*"):
            if path.is_file() and not path.is_symlink():
                os.chmod(path, 0o644)
        self.out = root / "out"
        self.work = root / "work"
        self.before: dict[str, str] | None = None

    def filter_file(self, *suffixes: str) -> Path:
        path = self.root / f"filter_{'_'.join(suffixes)}.json"
        path.write_text(json.dumps({"anat": {"suffix": list(suffixes)}}))
        return path

    def command(self, *args, level: str = "participant", subject: bool = True) -> list[str]:
        """``run.py`` on this copy; ``self.before`` is taken here, once the copy is final."""
        self.before = tree_digest(self.bids)
        cmd = [*RUN, str(self.bids), str(self.out), level, "-w", str(self.work), "--skip-bids-validation"]
        if subject:
            cmd += ["--participant-label", SUBJECT]
        return cmd + [str(a) for a in args]

    def run(self, *args, level: str = "participant", subject: bool = True, timeout: int = 900):
        cmd = self.command(*args, level=level, subject=subject)
        return subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=self.root, timeout=timeout)

    def check(self, proc, code: int, *needles: str) -> str:
        """Exit code, the one line naming what is wrong, no traceback, input and outputs intact."""
        assert proc.returncode == code, proc.stderr[-4000:]
        assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
        lines = [line for line in proc.stderr.splitlines() if all(n in line for n in needles)]
        assert len(lines) == 1, f"expected one line with {needles}:\n{proc.stderr[-4000:]}"
        assert tree_digest(self.bids) == self.before, "the input dataset was modified"
        assert_outputs_whole(self.out)
        return lines[0]

    def check_nothing_created(self) -> None:
        assert not self.out.exists(), sorted(self.out.rglob("*"))
        assert not self.work.exists(), sorted(self.work.rglob("*"))


def assert_outputs_whole(out: Path) -> None:
    """Every image derivative has its sidecar; no temporary file or folder is left behind."""
    if not out.exists():
        return
    for image in out.rglob("*.nii.gz"):
        assert image.with_name(image.name.replace(".nii.gz", ".json")).is_file(), f"{image} has no sidecar"
    leftovers = [p for p in out.rglob("*") if p.name.endswith(".tmp") or ".tmp-" in p.name or "write_test" in p.name]
    assert not leftovers, leftovers


def mask_of(out: Path, contrast: str) -> Path:
    return out / f"sub-{SUBJECT}" / "anat" / f"sub-{SUBJECT}_space-orig_label-SC_desc-{contrast}_mask.nii.gz"


def sidecar_of(path: Path) -> Path:
    return path.with_name(path.name.split(".")[0] + ".json")


def image_of(case: Case, contrast: str) -> Path:
    return case.bids / f"sub-{SUBJECT}" / "anat" / f"sub-{SUBJECT}_{contrast}.nii.gz"


def manual_mask_of(case: Case, contrast: str) -> Path:
    return case.bids / "derivatives" / "labels" / f"sub-{SUBJECT}" / "anat" / f"sub-{SUBJECT}_{contrast}_label-SC_seg.nii.gz"


def replace_data(path: Path, data: np.ndarray) -> None:
    """Rewrite the NIfTI file ``path`` with ``data`` (its header and affine kept, dtype from data)."""
    img = nib.load(path)
    header = img.header.copy()
    header.set_data_dtype(data.dtype)
    nib.save(nib.Nifti1Image(data, img.affine, header), path)


def make_unfetched(path: Path) -> None:
    """Turn ``path`` into what an unfetched git-annex/DataLad file is: a dangling symlink."""
    path.unlink()
    path.symlink_to(Path("../../.git/annex/objects/Xx/Yy/SHA256E-s1--0.nii.gz/SHA256E-s1--0.nii.gz"))


@pytest.fixture()
def case(ds_spine_mini, tmp_path) -> Case:
    return Case(ds_spine_mini, tmp_path)


# -- 1. --model as an archive -------------------------------------------------------------------
def test_model_archive_is_usable_for_the_whole_run(case):
    archive = case.root / "cord_seg.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(SHIPPED_SEGMENTATION.iterdir()):
            zf.write(path, f"cord_seg/{path.name}")
    proc = case.run("--model", archive, "--nprocs", 1, "--bids-filter-file", case.filter_file("T2starw"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Traceback" not in proc.stderr
    assert tree_digest(case.bids) == case.before
    assert_outputs_whole(case.out)
    mask = mask_of(case.out, "T2starw")
    meta = json.loads(mask.with_name(mask.name.replace(".nii.gz", ".json")).read_text())
    shipped = json.loads((SHIPPED_SEGMENTATION / "model.json").read_text())
    assert meta["Model"]["Checksum"] == f"sha256:{shipped['files']['weights.weights.h5']}"
    unpacked = list((case.work / "models").glob("*/model.json"))
    assert len(unpacked) == 1  # kept in the work dir, keyed by the archive's checksum
    # the derivative dataset carries a README and enough authors for the validator
    description = json.loads((case.out / "dataset_description.json").read_text())
    assert len(description["Authors"]) >= 2
    assert len((case.out / "README.md").read_text()) >= 150


# -- 2. unfetched git-annex/DataLad files -----------------------------------------------------
def test_unfetched_image_fails_alone(case):
    image = case.bids / f"sub-{SUBJECT}" / "anat" / f"sub-{SUBJECT}_T1w.nii.gz"
    make_unfetched(image)
    proc = case.run("--nprocs", 1, "--bids-filter-file", case.filter_file("T1w", "T2starw"))
    case.check(proc, 1, str(image), "file content not present", "datalad get")
    assert mask_of(case.out, "T2starw").is_file()  # the other image is still written
    assert not mask_of(case.out, "T1w").exists()


def test_unfetched_mask_refuses_the_group_level(case):
    mask = case.bids / "derivatives" / "labels" / f"sub-{SUBJECT}" / "anat" / f"sub-{SUBJECT}_T2starw_label-SC_seg.nii.gz"
    make_unfetched(mask)
    proc = case.run("--bids-filter-file", case.filter_file("T2starw"), level="group")
    line = case.check(proc, 66, "lumbo-bids: error:", str(mask), "file content not present")
    assert line.startswith("lumbo-bids: error:")
    case.check_nothing_created()


# -- 3. nothing is ever written into the input dataset ----------------------------------------
def test_database_dir_inside_bids_is_refused(case):
    database = case.bids / "derivatives" / "pybids_db"
    proc = case.run("--bids-database-dir", database)
    case.check(proc, 64, "lumbo-bids: error:", "--bids-database-dir", str(database))
    assert not database.exists()
    case.check_nothing_created()


# -- 4. a full disk in OUTPUT_DIR ------------------------------------------------------------
# run.py with the disk filling up while one derivative (argv[1]) is written: part of it reaches
# its temporary file, then ENOSPC (the participant level runs its sinks in this process)
DISK_FULL_WHILE_WRITING = """
import errno, sys
from pathlib import Path
import lumbo_bids.derivatives as derivatives
from lumbo_bids.cli.run import main

fill, victim = derivatives._fill, "." + sys.argv.pop(1) + "."

def fill_until_full(tmp, data=None, src=None):
    if Path(tmp).name.startswith(victim):
        Path(tmp).write_bytes(b"part of it")
        raise OSError(errno.ENOSPC, "No space left on device")
    return fill(tmp, data=data, src=src)

derivatives._fill = fill_until_full
sys.exit(main(sys.argv[1:]))
"""


def test_disk_full_while_writing_a_mask_is_73(case):
    mask = mask_of(case.out, "T2starw")
    cmd = case.command("--nprocs", 1, "--bids-filter-file", case.filter_file("T2starw"))
    cmd = [sys.executable, "-c", DISK_FULL_WHILE_WRITING, mask.name, *cmd[len(RUN) :]]
    env = {**ENV, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=case.root, timeout=900)
    case.check(proc, 73, str(mask), "No space left on device")  # also: no temporary file left
    assert not mask.exists() and not sidecar_of(mask).exists()  # neither half of the pair
    preproc = mask.parent / f"sub-{SUBJECT}_space-orig_res-05mm_desc-preproc_T2starw.nii.gz"
    assert preproc.is_file() and sidecar_of(preproc).is_file()  # the other derivatives are whole


@contextlib.contextmanager
def tiny_tmpfs(folder: Path, size: str):
    """``folder`` on a new tmpfs of ``size`` (root only; skipped where it cannot be mounted)."""
    folder.mkdir(parents=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_full_output_disk_is_73(case):
    with tiny_tmpfs(case.out, "64k"):  # room for the dataset files and a few small derivatives
        proc = case.run("--nprocs", 1, "--bids-filter-file", case.filter_file("T2starw"))
        assert proc.returncode == 73, proc.stderr[-4000:]
        assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
        full = [line for line in proc.stderr.splitlines() if "No space left on device" in line]
        named = re.compile(rf"cannot write( to OUTPUT_DIR)? {re.escape(str(case.out))}\S*: No space left on device")
        assert full and all(named.search(line) for line in full), proc.stderr[-4000:]
        assert tree_digest(case.bids) == case.before
        assert_outputs_whole(case.out)


# -- 6. misspelt filter entity ----------------------------------------------------------------
def test_misspelt_filter_entity_is_a_usage_error(case):
    filters = case.root / "filters.json"
    filters.write_text(json.dumps({"anat": {"suffix": "T2w", "acquisiton": "axial"}}))
    proc = case.run("--bids-filter-file", filters)
    line = case.check(proc, 64, "lumbo-bids: error:", str(filters), "'acquisiton'")
    assert "'acquisition'" in line  # the suggestion
    case.check_nothing_created()


# -- 7. numeric options are checked by the parser ----------------------------------------------
@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--overlap", "1.5"), ("--overlap", "-0.1"), ("--threshold", "1"), ("--threshold", "nan"),
        ("--epochs", "0"), ("--steps-per-epoch", "many"), ("--batch-size", "2.5"), ("--patience", "0"),
        ("--learning-rate", "-1e-4"), ("--learning-rate", "inf"), ("--augmentation", "1.5"),
        ("--validation-fraction", "1"), ("--resolution", "0"), ("--random-seed", "-1"), ("--mem", "0G"),
        ("--nprocs", "0"), ("--omp-nthreads", "-2"),
    ],
)  # fmt: skip
def test_numeric_options_are_checked_at_parse_time(case, option, value):
    proc = case.run(f"{option}={value}")  # '=': argparse would read '-1' as an option
    case.check(proc, 64, "lumbo-bids: error: argument", option, repr(value))
    case.check_nothing_created()


def test_config_file_values_are_checked_like_options(case):
    config_file = case.root / "best_config.json"
    config_file.write_text(json.dumps({"learning_rate": 0.0003, "epochs": 0}))
    proc = case.run("--config-file", config_file, level="group")
    case.check(proc, 64, "lumbo-bids: error:", str(config_file), "epochs")
    case.check_nothing_created()


# -- 8. an image of one axial slice -------------------------------------------------------------
def test_single_slice_image_gets_morphometrics_and_report(case):
    image = image_of(case, "T2starw")
    for path in (image, manual_mask_of(case, "T2starw")):
        nib.save(nib.load(path).slicer[:, :, 4:5], path)
    proc = case.run("--nprocs", 1, "--bids-filter-file", case.filter_file("T2starw"))
    case.check(proc, 0, str(image), "one axial slice")
    mask = mask_of(case.out, "T2starw")
    table = mask.with_name(mask.name.replace("_mask.nii.gz", "_morphometrics.tsv")).read_text().splitlines()
    row = dict(zip(table[0].split("\t"), table[1].split("\t")))
    assert len(table) == 2 and row["csa_mm2"] == "n/a" and row["angle_deg"] == "n/a"
    assert float(row["area_mm2"]) > 0  # the cord's area on that slice is still measured
    summary = json.loads(sidecar_of(mask.with_name(mask.name.replace("_mask", "_morphometrics"))).read_text())
    assert summary["CordVolume_mm3"] > 0 and summary["CordLength_mm"] is None and summary["ConusTip_mm"] is None
    assert "one axial slice" in summary["MorphometricsWarning"]
    report = (case.out / f"sub-{SUBJECT}.html").read_text()
    assert "one axial slice" in report and "No segmentation" not in report
    assert len(list((case.out / f"sub-{SUBJECT}" / "figures").glob("*.png"))) == 4  # 2 views, with and without overlay


# -- 9. no orientation in the header ---------------------------------------------------------------
def test_image_without_qform_and_sform_is_flagged(case):
    image = image_of(case, "T2starw")
    for path in (image, manual_mask_of(case, "T2starw")):  # the mask was drawn on the same header
        img = nib.load(path)
        header = img.header.copy()
        header.set_qform(None, code=0)
        header.set_sform(None, code=0)
        nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), None, header), path)
    proc = case.run("--nprocs", 1, "--bids-filter-file", case.filter_file("T2starw"))
    case.check(proc, 0, str(image), "qform_code and sform_code are both 0")
    meta = json.loads(sidecar_of(mask_of(case.out, "T2starw")).read_text())
    assert "qform_code and sform_code are both 0" in meta["GeometryWarning"]
    report = (case.out / f"sub-{SUBJECT}.html").read_text()
    assert re.search(r'<p class="warn">[^<]*qform_code and sform_code are both 0', report)


# -- 10. a label map or a soft mask as manual mask ----------------------------------------------
def test_label_map_as_manual_mask_takes_label_1(case):
    manual = manual_mask_of(case, "T2starw")
    cord = np.asanyarray(nib.load(manual).dataobj) > 0
    ring = np.stack([ndimage.binary_dilation(cord[..., k], iterations=3) for k in range(cord.shape[2])], axis=-1)
    replace_data(manual, np.where(cord, 1, np.where(ring, 2, 0)).astype(np.uint8))  # 2: around the cord
    proc = case.run("--nprocs", 1, "--bids-filter-file", case.filter_file("T2starw"))
    case.check(proc, 0, str(manual), "labels 1, 2", "label 1 taken as the cord")
    mask = mask_of(case.out, "T2starw")
    meta = json.loads(sidecar_of(mask).read_text())
    assert meta["ManualMaskLabel"] == 1 and "label 1 taken as the cord" in meta["ManualMaskWarning"]
    evaluation = json.loads(sidecar_of(mask.with_name(mask.name.replace("_mask", "_evaluation"))).read_text())
    # scored against label 1 alone (the cord), not against label 1 + the ring around it (0.86 against 0.66)
    produced = np.asanyarray(nib.load(mask).dataobj) > 0
    assert evaluation["Dice"] == pytest.approx(dice(produced, cord), abs=1e-3)
    assert evaluation["Dice"] > dice(produced, cord | ring) + 0.1 and evaluation["Dice"] > 0.8
    assert "label 1 taken as the cord" in (case.out / f"sub-{SUBJECT}.html").read_text()


def test_soft_mask_is_thresholded_and_says_so(case):
    manual = manual_mask_of(case, "T2starw")
    cord = (np.asanyarray(nib.load(manual).dataobj) > 0).astype(np.float32)
    replace_data(manual, ndimage.gaussian_filter(cord, sigma=(1.5, 1.5, 0)).astype(np.float32))
    proc = case.run("--nprocs", 1, "--bids-filter-file", case.filter_file("T2starw"))
    case.check(proc, 0, str(manual), "soft (probabilistic) mask", "above 0.5")
    meta = json.loads(sidecar_of(mask_of(case.out, "T2starw")).read_text())
    assert meta["ManualMaskThreshold"] == 0.5 and "soft (probabilistic) mask" in meta["ManualMaskWarning"]


def test_soft_mask_below_threshold_fails_that_image_saying_so(case):
    manual = manual_mask_of(case, "T2starw")
    replace_data(manual, (np.asanyarray(nib.load(manual).dataobj) > 0).astype(np.float32) * 0.4)
    proc = case.run("--nprocs", 1, "--bids-filter-file", case.filter_file("T2starw"))
    line = case.check(proc, 1, str(manual), "soft (probabilistic) mask")
    assert "threshold 0.5" in line and "maximum 0.4" in line and "empty" not in line
    assert not mask_of(case.out, "T2starw").exists()


# -- 11. --labels-dir that does not exist ---------------------------------------------------------
def test_missing_labels_dir_is_66(case):
    labels = case.root / "no_such_labels"
    proc = case.run("--labels-dir", labels)
    case.check(proc, 66, "lumbo-bids: error:", "--labels-dir", str(labels))
    case.check_nothing_created()


# -- 12. Ctrl-C ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("nprocs", "verbose", "when"),
    [(2, ("-v",), '[Node] Executing "'), (2, (), " · segment"), (1, ("-v",), '[Node] Executing "segment"')],
    ids=["workers-first-node", "workers-segment", "serial-segment"],
)
def test_ctrl_c_exits_130_with_one_line(case, nprocs, verbose, when):
    # the default output says when an image reaches the model; -v shows where each node starts
    cmd = case.command("--nprocs", nprocs, "--bids-filter-file", case.filter_file("T1w", "T2starw"), *verbose)
    # a session of its own: the signal goes to the whole process group, as a terminal's Ctrl-C
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=ENV,
                            cwd=case.root, start_new_session=True)  # fmt: skip
    seen = []
    try:
        for line in proc.stderr:
            seen.append(line)
            if when in line:  # the workflow runs (with 2 processes, its nodes run in workers)
                break
        os.killpg(proc.pid, signal.SIGINT)
        # a run that does not end fails this test (it once hung: a SIGINT lost inside Nipype)
        _, rest = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    done = subprocess.CompletedProcess(cmd, proc.returncode, "", "".join(seen) + rest)
    case.check(done, 130, "lumbo-bids: error: interrupted")
    assert "KeyboardInterrupt" not in done.stderr


# -- 13. help, early failures, group failures, messages -----------------------------------------
def test_help_gives_each_default_once():
    text = subprocess.run([*RUN, "--help"], capture_output=True, text=True, env=ENV, check=True).stdout
    assert "(default: None)" not in text and "(default: False)" not in text
    entries = " ".join(text.split()).split(" --")
    assert all(entry.count("(default") <= 1 for entry in entries), [e for e in entries if e.count("(default") > 1]


@pytest.mark.parametrize(
    ("args", "code"),
    [(("--participant-label", "ghost"), 64), (("--session-label", "none"), 18)],
)
def test_early_failure_leaves_no_folders(case, args, code):
    proc = case.run(*args, subject=False)
    case.check(proc, code, "lumbo-bids: error:")
    case.check_nothing_created()


def test_group_failure_writes_no_dataset_description(case):
    case.out.mkdir()
    proc = case.run("--participant-label", "sctLumbar", level="group", subject=False)
    case.check(proc, 66, "lumbo-bids: error:", "no selected image has a manual mask")
    assert not (case.out / "dataset_description.json").exists()
    assert list(case.out.iterdir()) == []


def test_missing_sct_models_named_once(case):
    sct = case.root / "sct_models"
    sct.mkdir()
    # sctLumbar has no manual mask, so its T2w image needs a localiser
    proc = case.run("--sct-models", sct, "--participant-label", "sctLumbar", subject=False)
    line = case.check(proc, 66, "lumbo-bids: error:", "--sct-models", str(sct))
    assert line.count("t2_ctr.h5") == 1
    case.check_nothing_created()


# -- 5. read-only subject folder ------------------------------------------------------------------
@contextlib.contextmanager
def read_only(folder: Path):
    """``folder`` made unwritable: mode 0555, and immutable for root (who ignores the mode)."""
    os.chmod(folder, 0o555)
    immutable = os.geteuid() == 0 and shutil.which("chattr") is not None
    if immutable and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        immutable = False
    try:
        probe = folder / "probe"
        try:
            probe.touch()
        except OSError:
            pass
        else:
            probe.unlink()
            pytest.skip("cannot make a folder read-only here")
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=False)
        os.chmod(folder, 0o755)


def test_read_only_subject_folder_is_73(case):
    subject_dir = case.out / f"sub-{SUBJECT}"
    subject_dir.mkdir(parents=True)
    with read_only(subject_dir):
        proc = case.run("--nprocs", 1, "--bids-filter-file", case.filter_file("T2starw"))
    case.check(proc, 73, "lumbo-bids: error:", str(subject_dir))
    assert list(subject_dir.iterdir()) == []


# -- 14. the same subject twice in one work dir ------------------------------------------------------
def test_second_run_of_a_subject_says_already_running(case):
    filters = case.filter_file("T2starw")
    first_cmd = case.command("--nprocs", 1, "--bids-filter-file", filters)
    first = subprocess.Popen(first_cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=ENV, cwd=case.root)
    seen = []
    try:
        for line in first.stderr:  # the first run holds the lock from its checks to its exit
            seen.append(line)
            if " · segment" in line:  # the image reached the model
                break
        second = case.run("--nprocs", 1, "--bids-filter-file", filters, "--save-probseg")
        seen.append(first.stderr.read())
        first.wait(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
    case.check(second, 75, "lumbo-bids: error:", f"sub-{SUBJECT}", "already running", str(case.work))
    assert first.returncode == 0, "".join(seen)[-4000:]
    assert mask_of(case.out, "T2starw").is_file()


def test_held_lock_refuses_the_subject_before_any_work(case):
    path = lock_path(case.work, SUBJECT)
    path.parent.mkdir(parents=True)
    with open(path, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        proc = case.run("--nprocs", 1, "--bids-filter-file", case.filter_file("T2starw"))
    case.check(proc, 75, "already running")
    assert not case.out.exists()
