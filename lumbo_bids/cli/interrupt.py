"""Ctrl-C: one line and exit 130, not a KeyboardInterrupt traceback from every worker.

The handler is installed in the main process and inherited by MultiProc's forked workers.
There it interrupts a running node (its ``finally``/``except BaseException`` clean-ups run and
Nipype records the result), and is ignored by an idle worker waiting for work: that worker
leaves when the pool shuts down, instead of dying with a traceback.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading

_MAIN_PID: int | None = None
_INTERRUPTED = False
_INTERRUPTED_NODE = None  # in a worker: the node a SIGINT already stopped (a second one waits)
#: seconds a worker gets to finish its clean-up before it is terminated
WORKER_GRACE_S = 10.0


def _nipype_node_frame(frame):
    """The frame of Nipype's ``run_node`` this worker is executing, if any."""
    while frame is not None:
        code = frame.f_code
        if code.co_name == "run_node" and "nipype" in code.co_filename:
            return frame
        frame = frame.f_back
    return None


def _on_sigint(signum, frame) -> None:
    global _INTERRUPTED, _INTERRUPTED_NODE
    if os.getpid() == _MAIN_PID:
        _INTERRUPTED = True
        threading.excepthook = _quiet  # the pool's threads may now fail on interrupted nodes
    else:
        node = _nipype_node_frame(frame)
        if node is None or node is _INTERRUPTED_NODE:
            return  # idle (it leaves when the pool shuts down), or already stopping this node
        _INTERRUPTED_NODE = node
    # from now on Nipype (and the pool's callbacks) would log the interrupted nodes' tracebacks:
    # their crash files are enough, the run ends with one line
    logging.disable(logging.CRITICAL)
    raise KeyboardInterrupt


def _quiet(args) -> None:
    pass


def interrupted() -> bool:
    """Whether this (main) process got SIGINT."""
    return _INTERRUPTED and os.getpid() == _MAIN_PID


def status_callback(node, status: str) -> None:
    """Nipype status callback: Nipype records a Ctrl-C inside a node as that node's failure
    and goes on with the next node; this re-raises it as soon as the node ends."""
    if interrupted():
        raise KeyboardInterrupt


def install() -> None:
    """Route SIGINT through :func:`_on_sigint` (call once, in the main process)."""
    global _MAIN_PID
    _MAIN_PID = os.getpid()
    signal.signal(signal.SIGINT, _on_sigint)


def stop_workers(runner) -> None:
    """After Ctrl-C: cancel queued nodes, interrupt running ones, wait for the workers to leave.

    A worker still alive after :data:`WORKER_GRACE_S` is terminated; workers only write in the
    work dir (the derivative sinks run in the main process), so nothing half-written reaches
    OUTPUT_DIR.
    """
    pool = getattr(runner, "pool", None)
    if pool is None:
        return
    pool.shutdown(wait=False, cancel_futures=True)
    workers = multiprocessing.active_children()
    for worker in workers:  # when only this process got the signal (kill -INT <pid>)
        try:
            os.kill(worker.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
    for worker in workers:
        worker.join(WORKER_GRACE_S)
        if worker.is_alive():
            worker.terminate()
            worker.join(1)
