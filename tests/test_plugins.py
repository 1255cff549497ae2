"""Our multi-process scheduler (lumbo_bids.engine.plugins) runs a workflow as MultiProc does, and
ends (never polls forever) when a worker dies or Ctrl-C was swallowed."""

from __future__ import annotations

import logging
import os
import signal
from types import SimpleNamespace

import pytest
from nipype.interfaces.utility import Function
from nipype.pipeline import engine as pe

from lumbo_bids.engine import interrupt
from lumbo_bids.engine.plugins import SafeMultiProcPlugin
from lumbo_bids.engine.runner import run_workflow

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
    # the nodes submitted after the worker of n1 died run in a fresh pool; a node in flight in the
    # other worker when the pool broke (at most one, with 2 processes) is failed with n1
    workflow = _workflow(tmp_path, _double, _die, _double, _double, _double)
    with pytest.raises(RuntimeError) as error:
        run_workflow(workflow, CONFIG)
    assert "worker process running this node died" in str(error.value.__cause__ or error.value)
    finished = [k for k in (0, 2, 3, 4) if (tmp_path / "wf" / f"n{k}" / f"result_n{k}.pklz").exists()]
    assert len(finished) >= 3, finished
    assert not (tmp_path / "wf" / "n1" / "result_n1.pklz").exists()
    crashed = sorted(path.name.split("-")[4] for path in (tmp_path / "crash").glob("crash-*.pklz"))
    # every node is done or failed (the one in flight may have finished before its result was lost)
    assert "n1" in crashed and len(crashed) <= 2 and all(f"n{k}" in crashed for k in (0, 2, 3, 4) if k not in finished)


def test_a_ctrl_c_swallowed_by_the_node_copy_stops_the_scheduler(tmp_path, monkeypatch, deadline):
    # the scheduler deep-copies each node before submitting it, and Nipype's spec copy runs inside
    # a bare `except: pass`: a SIGINT landing there loses its KeyboardInterrupt; only interrupt's
    # record of it remains
    from copy import deepcopy

    from lumbo_bids.engine import plugins

    def copy_hit_by_sigint(node):
        try:
            interrupt._on_sigint(signal.SIGINT, None)
        except:  # noqa: E722 -- as nipype's BaseTraitedSpec.__deepcopy__ does
            pass
        return deepcopy(node)

    monkeypatch.setattr(interrupt, "_MAIN_PID", os.getpid())
    monkeypatch.setattr(interrupt, "_INTERRUPTED", False)
    monkeypatch.setattr(plugins, "deepcopy", copy_hit_by_sigint)
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


def _chain(base_dir, length: int) -> pe.Workflow:
    workflow = pe.Workflow(name="chain", base_dir=str(base_dir))
    workflow.config["execution"].update({"poll_sleep_duration": 0.01, "crashdump_dir": str(base_dir / "crash")})
    nodes = [pe.Node(Function(input_names=["x"], output_names=["y"], function=_double), name=f"c{k}") for k in range(length)]
    nodes[0].inputs.x = 1
    for a, b in zip(nodes, nodes[1:]):
        workflow.connect(a, "y", b, "x")
    return workflow


def test_a_cached_rerun_is_cleared_in_one_poll(tmp_path, monkeypatch, deadline):
    # Nipype reserves CPUs for a ready node before finding it cached and keeps them for that poll:
    # a rerun then needs about one poll per n_procs nodes
    polls = []
    send = SafeMultiProcPlugin._send_procs_to_workers
    monkeypatch.setattr(SafeMultiProcPlugin, "_send_procs_to_workers", lambda self, **kw: polls.append(1) or send(self, **kw))
    run_workflow(_chain(tmp_path, 3), CONFIG)
    first = len(polls)
    polls.clear()
    run_workflow(_chain(tmp_path, 12), CONFIG)  # 3 cached nodes, then 9 to run
    assert (tmp_path / "chain" / "c11" / "result_c11.pklz").exists()
    polls.clear()
    result = run_workflow(_chain(tmp_path, 12), CONFIG)
    assert len(polls) == 1, (first, len(polls))
    assert {node.name for node in result.nodes()} == {f"c{k}" for k in range(12)}


#: the status callback's record (a module-level function: a MapNode's sub-nodes carry the callback to the workers)
SEEN: list[tuple[str, str]] = []


def _record(node, status: str) -> None:
    SEEN.append((node.name, status))


def _node(name: str, function=None) -> pe.Node:
    return pe.Node(Function(input_names=["x"], output_names=["y"], function=function or _double), name=name)


def _add(x, z):
    return x + z


def _sleepy_double(x):
    import time

    time.sleep(0.3)
    return 2 * x


def test_it_runs_a_graph_in_order_within_its_cpus(tmp_path, deadline):
    """A diamond (a -> b, c -> d) with results that depend on the order, and a MapNode, on 2 CPUs;
    no node is given more CPUs than the run has (a 2-CPU node waits for both)."""
    workflow = pe.Workflow(name="diamond", base_dir=str(tmp_path))
    workflow.config["execution"].update({"poll_sleep_duration": 0.01, "crashdump_dir": str(tmp_path / "crash")})
    a, b, c = _node("a"), _node("b", _sleepy_double), _node("c", _sleepy_double)
    b.n_procs = 2
    d = pe.Node(Function(input_names=["x", "z"], output_names=["y"], function=_add), name="d")
    each = pe.MapNode(Function(input_names=["x"], output_names=["y"], function=_double), iterfield=["x"], name="each")
    each.inputs.x = [1, 2, 3]
    a.inputs.x = 1
    workflow.connect([(a, b, [("y", "x")]), (a, c, [("y", "x")]), (b, d, [("y", "x")]), (c, d, [("y", "z")])])
    workflow.add_nodes([each])
    SEEN.clear()
    seen = SEEN
    plugin = SafeMultiProcPlugin(plugin_args={"n_procs": 2, "status_callback": _record})
    graph = workflow.run(plugin=plugin)
    results = {node.name: node.result.outputs.y for node in graph.nodes()}
    assert results["d"] == 8 and results["each"] == [2, 4, 6]  # a = 2, b = c = 4, d = b + c
    started = [name for name, status in seen if status == "start"]
    assert started.index("a") < min(started.index("b"), started.index("c"))
    assert ("d", "end") in seen and seen.index(("d", "start")) > max(seen.index(("b", "end")), seen.index(("c", "end")))
    with pytest.raises(RuntimeError, match="Insufficient resources"):
        big = _node("big")
        big.inputs.x = 1
        big.n_procs = 3
        lone = pe.Workflow(name="big", base_dir=str(tmp_path))
        lone.add_nodes([big])
        lone.run(plugin=SafeMultiProcPlugin(plugin_args={"n_procs": 2}))
