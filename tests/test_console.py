"""What reaches the terminal at each verbosity, the status line, the log file, TensorFlow's C++
notices, and the progress lines (``lumbo_bids.cli.console`` and ``.progress``)."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import REPO

from lumbo_bids.cli import console
from lumbo_bids.engine.progress import ImageProgress, epoch_line, training_outcome
from lumbo_bids.participant import image_summary

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # anything but text, tab and newline
TF_NOTICE = re.compile(r"absl::InitializeLog|port\.cc|cpu_feature_guard|oneDNN")


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture()
def restore_logging():
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    yield
    for handler in list(root.handlers):
        if handler not in saved[0]:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(saved[1])


def _say_everything() -> None:
    logging.getLogger("lumbo_bids").info("image 1/2 · sub-01 T2w · done")
    logging.getLogger("lumbo_bids").debug("our detail")
    logging.getLogger("nipype.workflow").info('[Node] Executing "segment"')
    logging.getLogger("nipype.workflow").warning("a Nipype warning")
    logging.getLogger("tensorflow").warning("5 out of the last 5 calls triggered tf.function retracing")
    logging.getLogger("lumbo_bids").error("sub-02 failed: segment: boom")


@pytest.mark.parametrize(
    ("verbosity", "shown", "hidden"),
    [
        (
            0,
            ["image 1/2", "error: sub-02 failed"],
            ["detail", "[Node]", "retracing", "a Nipype warning"],  # our one line says what failed
        ),
        (1, ["image 1/2", "our detail", '[Node] Executing "segment"', "retracing", "a Nipype warning"], []),
    ],
    ids=["default", "-v"],
)
def test_verbosity_decides_what_reaches_the_terminal(restore_logging, verbosity, shown, hidden):
    stream = io.StringIO()
    console.setup(verbosity, stream)
    _say_everything()
    text = stream.getvalue()
    assert all(s in text for s in shown), text
    assert not any(h in text for h in hidden), text
    assert not CONTROL.search(text)


def test_off_a_terminal_a_status_is_a_plain_line(restore_logging):
    stream = io.StringIO()
    console.setup(0, stream)
    logging.getLogger("lumbo_bids").info("image 1/1 · sub-01 T2w · started", extra=console.STATUS)
    console.status("image 1/1 · sub-01 T2w · segment")  # terminals only
    assert stream.getvalue() == "image 1/1 · sub-01 T2w · started\n"


def test_on_a_terminal_the_status_line_is_redrawn_under_the_others(restore_logging):
    stream = FakeTerminal()
    console.setup(0, stream)
    console.status("image 1/2 · sub-01 T2w · segment")
    logging.getLogger("lumbo_bids").info("image 2/2 · sub-02 T1w · done")
    console.clear_status()
    clear = "\r\x1b[K"
    expected = [clear + "image 1/2 · sub-01 T2w · segment", clear + "image 2/2 · sub-02 T1w · done\n"]
    expected += ["image 1/2 · sub-01 T2w · segment", clear]
    assert stream.getvalue() == "".join(expected)


def test_log_file_gets_every_record_from_the_start_and_no_control_characters(restore_logging, tmp_path):
    console.setup(0, FakeTerminal())
    logging.getLogger("lumbo_bids").info("before the work dir existed")
    log = tmp_path / "logs" / "run.log"
    console.log_to_file(log)
    logging.getLogger("lumbo_bids").info("image 1/1 · sub-01 T2w · started", extra=console.STATUS)
    console.status("image 1/1 · sub-01 T2w · segment")
    _say_everything()
    for handler in logging.getLogger().handlers:
        handler.flush()
    text = log.read_text()
    for line in ("before the work dir existed", "sub-01 T2w · started", "our detail", '[Node] Executing "segment"'):
        assert line in text
    assert "· segment" not in text  # a status line is drawn, never logged
    assert not CONTROL.search(text)


def _import_tensorflow(verbosity: int) -> str:
    """stderr of a process that imports TensorFlow after ``quiet_tensorflow`` and forks a worker
    that imports it too (as Nipype's MultiProc workers do)."""
    code = (
        "import os, sys\n"
        "from lumbo_bids.cli import console\n"
        f"console.quiet_tensorflow({verbosity})\n"
        "pid = os.fork()\n"
        "import tensorflow\n"
        "print('imported', file=sys.stderr)\n"
        "os._exit(0) if pid == 0 else os.waitpid(pid, 0)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("imported") == 2, proc.stderr
    return proc.stderr


def test_tensorflow_notices_only_with_verbose():
    assert not TF_NOTICE.search(_import_tensorflow(0))
    assert TF_NOTICE.search(_import_tensorflow(1))  # they exist: -v brings them back


def _onednn_notice(user_value: str | None) -> bool:
    """Whether TensorFlow, imported after lumbo_bids, says its oneDNN CPU kernels are on."""
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "0"
    if user_value is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = user_value
    code = "import lumbo_bids, tensorflow"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return "oneDNN custom operations are on" in proc.stderr


def test_tensorflow_uses_onednn_on_every_cpu_unless_the_user_says_no():
    assert _onednn_notice(None)  # on by lumbo_bids' default, AVX2-only CPUs included
    assert not _onednn_notice("0")  # the user's value wins


def _first_line(tree, wanted) -> int | None:
    """Line of the first import (anywhere in the module) of a top-level package in ``wanted``."""
    import ast

    lines = []
    for node in ast.walk(tree):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        if any(name.split(".")[0] in wanted for name in names):
            lines.append(node.lineno)
    return min(lines, default=None)


def test_every_script_loads_lumbo_bids_before_tensorflow():
    """A script that imports TensorFlow (or Keras) before lumbo_bids runs without oneDNN on AVX2 CPUs:
    benchmark_inference.py timed PAM50small at 22 s instead of 14.5 s that way (2026-12-07)."""
    import ast

    late = []
    for path in [REPO / "run.py", *sorted((REPO / "scripts").glob("*.py"))]:
        tree = ast.parse(path.read_text())
        tf_line = _first_line(tree, {"tensorflow", "keras"})
        if tf_line is None:
            continue
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]  # module level, not in a function
        ours = [n.lineno for n in top if _first_line(ast.Module(body=[n], type_ignores=[]), {"lumbo_bids"})]
        if not ours or min(ours) > tf_line:
            late.append(path.name)
    assert late == []


def test_replay_keeps_what_is_not_a_tensorflow_notice(capsys):
    console._replay(
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
        "I0000 00:00:1795628940.932893    6580 port.cc:153] oneDNN custom operations are on.\n"
        "E0000 00:00:1795628940.932893    6580 cuda_dnn.cc:8579] Unable to register cuDNN factory\n"
        "F0000 00:00:1795628940.932893    6580 fatal.cc:1] a fatal error\n"
        "something else entirely\n"
    )
    assert capsys.readouterr().err.splitlines() == [
        "F0000 00:00:1795628940.932893    6580 fatal.cc:1] a fatal error",
        "something else entirely",
    ]


def _node(image: str, name: str):
    return SimpleNamespace(name=name, fullname=f"lumbo_bids_0_1_wf.sub_01_wf.{image}.preproc_wf.{name}")


def test_image_progress_one_line_when_an_image_is_segmented_and_one_when_it_is_done(caplog):
    labels = {"sub_01_T2w_wf": "sub-01 T2w", "sub_01_T1w_wf": "sub-01 T1w"}
    progress = ImageProgress(labels, summary=lambda key: f"Dice 0.9 ({key})", announce="segment")
    t2 = [_node("sub_01_T2w_wf", n) for n in ("validate", "segment", "ds_mask")]
    t1 = [_node("sub_01_T1w_wf", n) for n in ("validate", "segment")]
    progress.expect([*t2, *t1, SimpleNamespace(name="other", fullname="lumbo_bids_0_1_wf.other")])
    with caplog.at_level(logging.INFO, logger="lumbo_bids"):
        progress(t2[0], "start")
        progress(t1[0], "start")
        progress(t1[0], "end")
        progress(t1[1], "start")  # T1w reaches the model first: image 1
        progress(t2[0], "end")
        progress(t2[1], "start")
        progress(t2[1], "end")
        progress(t2[2], "end")  # MultiProc gives no "start" for a node run in the main process
        progress(t1[1], "exception")
        progress(t1[1], "exception")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "image 1/2 · sub-01 T1w · segment",
        "image 2/2 · sub-01 T2w · segment",
        "image 2/2 · sub-01 T2w · done in 0 s · Dice 0.9 (sub_01_T2w_wf)",
        "image 1/2 · sub-01 T1w · failed at segment",
    ]


def test_a_cached_image_gets_its_done_line_only(caplog):
    progress = ImageProgress({"sub_01_T2w_wf": "sub-01 T2w"}, announce="segment")
    nodes = [_node("sub_01_T2w_wf", n) for n in ("validate", "segment")]
    progress.expect(nodes)
    with caplog.at_level(logging.INFO, logger="lumbo_bids"):
        for node in nodes:  # cached: Nipype says "end" only
            progress(node, "end")
    assert [r.getMessage() for r in caplog.records] == ["image 1/1 · sub-01 T2w · done in 0 s"]


def test_training_outcome_says_why_training_ended_and_which_epoch_was_kept():
    stopped = training_outcome(epochs_run=12, epochs=30, patience=5, best_epoch=6, best_dice=0.8512)
    assert stopped == (
        "early stopping after epoch 12 of 30: no better validation Dice for 5 epoch(s); kept epoch 7 (validation Dice 0.851)"
    )
    assert training_outcome(30, 30, 5, 29, 0.9) == "trained 30 epoch(s); kept epoch 30 (validation Dice 0.900)"


def test_epoch_line_marks_the_best_epoch():
    logs = {"loss": 0.41234, "dice": 0.7, "val_dice": 0.815}
    assert (
        epoch_line(2, 30, logs, best=0.8, seconds=41.2)
        == "epoch 3/30 · loss 0.412 · Dice 0.700 · validation Dice 0.815 (best) · 41 s"
    )
    assert "(best)" not in epoch_line(3, 30, logs, best=0.9, seconds=1)


def test_after_a_resume_best_means_best_of_the_whole_run(restore_logging, caplog):
    """The first epoch after ``--resume`` is "(best)" only when it beats the epochs kept before it."""
    from lumbo_bids.engine.progress import epoch_progress

    progress = epoch_progress(30, 25)
    progress.resume_best(0.9)  # what train() says of the kept epochs
    with caplog.at_level(logging.INFO, logger="lumbo_bids"):
        progress.on_epoch_begin(12)
        progress.on_epoch_end(12, {"loss": 0.4, "dice": 0.7, "val_dice": 0.85})
        progress.on_epoch_end(13, {"loss": 0.4, "dice": 0.7, "val_dice": 0.95})
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert "(best)" not in lines[0] and lines[1].startswith("epoch 14/30") and "0.950 (best)" in lines[1]


@pytest.mark.parametrize(
    ("mask", "method", "expected"),
    [
        (True, "manual mask", "Dice 0.871 · centerline: manual mask · report {out}/sub-01.html"),
        (False, "automatic (lumbo_bids-cord-localiser)", "centerline: localiser · report {out}/sub-01.html"),
    ],
)
def test_image_summary_reads_the_sidecars(tmp_path, mask, method, expected):
    from lumbo_bids.derivatives import image_output_path
    from lumbo_bids.utils.bids import AnatInput

    anat = AnatInput(Path("sub-01_T2w.nii.gz"), "01", None, "T2w", Path("m.nii.gz") if mask else None, {"subject": "01"})
    sidecars = {"mask": {"CenterlineMethod": method}, **({"evaluation": {"Dice": 0.8712}} if mask else {})}
    for key, meta in sidecars.items():
        path = image_output_path(tmp_path, anat, key, extension=".json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(meta))
    assert image_summary(SimpleNamespace(output_dir=tmp_path), anat) == expected.format(out=tmp_path)
