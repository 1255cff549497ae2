"""Ctrl-C: one line and exit 130, not a KeyboardInterrupt traceback from every worker.

SIGTERM (``kill``, SLURM at the walltime, ``docker stop``) and SIGHUP (a closed terminal or
SSH session) are handled the same way, so that such a run also stops its workers, keeps what
it finished and is resumed by a plain rerun (a SIGHUP ignored from the start, under ``nohup``,
stays ignored). The handler is installed in the main process and inherited by MultiProc's forked workers.
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
_SIGNAL: str | None = None  # the name of the signal that interrupted the main process
#: the signals that stop a run as Ctrl-C does
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
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
    global _INTERRUPTED, _INTERRUPTED_NODE, _SIGNAL
    if os.getpid() == _MAIN_PID:
        _INTERRUPTED = True
        _SIGNAL = _SIGNAL or signal.Signals(signum).name
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
    """Whether this (main) process got SIGINT (or SIGTERM, SIGHUP)."""
    return _INTERRUPTED and os.getpid() == _MAIN_PID


def signal_name() -> str | None:
    """The name of the first signal that interrupted this (main) process (``SIGTERM``), if any."""
    return _SIGNAL if interrupted() else None


def status_callback(node, status: str) -> None:
    """Nipype status callback: Nipype records a Ctrl-C inside a node as that node's failure
    and goes on with the next node; this re-raises it as soon as the node ends."""
    if interrupted():
        raise KeyboardInterrupt


def install() -> None:
    """Route SIGINT, SIGTERM and SIGHUP through :func:`_on_sigint` (call once, in the main process)."""
    global _MAIN_PID
    _MAIN_PID = os.getpid()
    for signum in SIGNALS:
        if signum == signal.SIGHUP and signal.getsignal(signum) is signal.SIG_IGN:
            continue  # nohup: the user asked for the run to outlive the terminal
        signal.signal(signum, _on_sigint)


def stop_workers(runner) -> None:
    """After Ctrl-C (or SIGTERM, SIGHUP): cancel queued nodes, interrupt running ones, wait for the workers to leave.

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
