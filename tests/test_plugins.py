"""The MultiProc scheduler ends (never polls forever) when a worker dies or Ctrl-C was swallowed."""

from __future__ import annotations

import logging
import os
import signal
from types import SimpleNamespace

import pytest
from nipype.interfaces.utility import Function
from nipype.pipeline import engine as pe

from lumbo_bids.cli import interrupt
from lumbo_bids.cli.participant import run_workflow
from lumbo_bids.cli.plugins import SafeMultiProcPlugin

CONFIG = SimpleNamespace(nprocs=2, mem_gb=None)


@pytest.fixture
def deadline():
    """Nipype's own scheduler would poll forever here: fail after 120 s instead."""

    def expire(signum, frame):
        raise TimeoutError("the scheduler was still waiting after 120 s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _die(x):
    import os
    import signal

    os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer does
    return x


def _double(x):
    return 2 * x


def _workflow(base_dir, *functions) -> pe.Workflow:
    workflow = pe.Workflow(name="wf", base_dir=str(base_dir))
    for k, function in enumerate(functions):
        node = pe.Node(Function(input_names=["x"], output_names=["y"], function=function), name=f"n{k}")
        node.inputs.x = k + 1
        workflow.add_nodes([node])
    workflow.config["execution"]["crashdump_dir"] = str(base_dir / "crash")
    return workflow


def test_a_dead_worker_fails_its_node_and_the_others_still_run(tmp_path, deadline):
    # n0 and n2 run after the worker of n1 died: the broken pool is replaced
    workflow = _workflow(tmp_path, _double, _die, _double, _double)
    with pytest.raises(RuntimeError) as error:
        run_workflow(workflow, CONFIG)
    assert "worker process running this node died" in str(error.value.__cause__ or error.value)
    for k in (0, 2, 3):
        assert (tmp_path / "wf" / f"n{k}" / f"result_n{k}.pklz").exists()
    assert not (tmp_path / "wf" / "n1" / "result_n1.pklz").exists()
    (crash_file,) = (tmp_path / "crash").glob("crash-*.pklz")
    assert "n1" in crash_file.name


def test_a_ctrl_c_swallowed_by_the_node_copy_stops_the_scheduler(tmp_path, monkeypatch, deadline):
    # Nipype deep-copies each node before submitting it, inside a bare `except: pass`: a SIGINT
    # landing there loses its KeyboardInterrupt; only interrupt's record of it remains
    from copy import deepcopy

    from nipype.pipeline.plugins import multiproc

    def copy_hit_by_sigint(node):
        try:
            interrupt._on_sigint(signal.SIGINT, None)
        except:  # noqa: E722 -- as nipype's BaseTraitedSpec.__deepcopy__ does
            pass
        return deepcopy(node)

    monkeypatch.setattr(interrupt, "_MAIN_PID", os.getpid())
    monkeypatch.setattr(interrupt, "_INTERRUPTED", False)
    monkeypatch.setattr(multiproc, "deepcopy", copy_hit_by_sigint)
    workflow = _workflow(tmp_path, _double)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_workflow(workflow, CONFIG)
    finally:
        logging.disable(logging.NOTSET)  # the handler silences logging for the rest of a real run
    assert not (tmp_path / "wf" / "n0" / "result_n0.pklz").exists()


def test_the_scheduler_is_the_safe_one(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(pe.Workflow, "run", lambda self, plugin: seen.append(plugin))
    run_workflow(_workflow(tmp_path, _double), CONFIG)
    assert isinstance(seen[0], SafeMultiProcPlugin)
