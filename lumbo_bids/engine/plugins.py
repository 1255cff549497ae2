"""Nipype's MultiProc scheduler, made safe against two ways it can wait forever, and quick
on a rerun.

1. **A worker that dies.** MultiProc records a node's result from its future's done-callback,
   which assumes the future holds a result. When a worker process dies (killed by the
   out-of-memory killer, a signal, or a node it cannot unpickle), the executor breaks, every
   pending future holds ``BrokenProcessPool`` instead, the callback fails in a background
   thread, and the scheduler polls for results that never come. Here such a future becomes a
   failed node, with a line that says what happened; the next node gets a fresh pool of
   workers, so the other images go on.
2. **A swallowed Ctrl-C.** Nipype deep-copies each node before submitting it, and the spec's
   ``__deepcopy__`` has a bare ``except: pass``: a SIGINT that lands there is lost (and the
   half-copied node then kills the worker that unpickles it). :mod:`.interrupt` still records
   the signal, so the scheduler checks that record on every poll, before anything is submitted.

And **workers that die with the run**: a main process killed outright (SIGKILL, the out-of-memory
killer) cannot stop its workers, which were then left waiting for work for ever, holding the
subject's lock (they inherit its file). Each worker asks the kernel for SIGKILL when the main process
dies (Linux: ``prctl(PR_SET_PDEATHSIG)``), so the lock is free again at once (:mod:`.locks`).

And **a cached rerun in one poll**: MultiProc reserves a ready node's CPUs and memory *before*
looking in the cache, and does not give them back when the node turns out to be cached; so each
poll clears at most ``n_procs`` cached nodes, and a rerun of a study with nothing to do takes one
poll per couple of nodes (each poll's bookkeeping growing with the graph: quadratic in the study's
size). Here every ready node whose result is cached is cleared first, with the nodes that become
ready then, before any resource is counted. And MultiProc runs a full ``gc.collect()`` after every
node it runs in the main process (the derivative sinks), a cost that grows with everything the main
process holds (the study's graph, TensorFlow, pybids): most of a cached rerun's time, and more per
image the larger the study. What exists when the run starts is frozen (``gc.freeze``), so each of
those collections only walks what the run has created since.
"""

from __future__ import annotations

import ctypes
import gc
import multiprocessing
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np
from nipype.pipeline.engine import MapNode
from nipype.pipeline.plugins import MultiProcPlugin
from nipype.pipeline.plugins.multiproc import process_initializer

from . import interrupt

#: what a failed node's traceback says when its worker process died
WORKER_DIED = (
    "the worker process running this node died ({error}); "
    "if it ran out of memory, give the run more (--mem) or fewer processes (--nprocs)"
)


class SafeMultiProcPlugin(MultiProcPlugin):
    """:class:`MultiProcPlugin` that ends on a dead worker or a recorded Ctrl-C, and clears cached
    nodes at once."""

    def __init__(self, plugin_args=None):
        super().__init__(plugin_args=plugin_args)
        self.pool.shutdown(wait=False)  # Nipype's pool, which has started no worker yet
        self.pool = self._new_pool()
        self._uncached: set[int] = set()  # ready nodes found not cached: waiting for a worker

    def _new_pool(self) -> ProcessPoolExecutor:
        """Nipype's pool of workers, each of which dies with this process (:func:`worker_initializer`)."""
        context = multiprocessing.get_context(self.plugin_args.get("mp_context"))
        # a forkserver's workers are its children, not this process's
        parent = os.getpid() if context.get_start_method() in ("fork", "spawn") else None
        return ProcessPoolExecutor(
            max_workers=self.processors,
            initializer=worker_initializer,
            initargs=(self._cwd, parent),
            mp_context=context,
        )

    def run(self, graph, config, updatehash=False):
        gc.collect()
        gc.freeze()
        try:
            return super().run(graph, config, updatehash=updatehash)
        finally:
            gc.unfreeze()

    def _send_procs_to_workers(self, updatehash=False, graph=None):
        _raise_if_interrupted()
        if not updatehash:
            self._clear_cached(graph)
        return super()._send_procs_to_workers(updatehash=updatehash, graph=graph)

    def _clear_cached(self, graph) -> None:
        """Mark every ready, cached node done (Nipype's own check: ``_local_hash_check``), and
        again for the nodes that this makes ready, until none is left. A ready node found not
        cached is not hashed again while it waits for a worker (its inputs are final)."""
        while True:
            ready = np.flatnonzero(~self.proc_done & (self.depidx.sum(axis=0) == 0).__array__())
            cleared = False
            for jobid in ready:
                if jobid in self._uncached or isinstance(self.procs[jobid], MapNode):
                    continue  # MapNodes are expanded into sub-nodes by Nipype's own loop
                self.proc_done[jobid] = self.proc_pending[jobid] = True
                if self._local_hash_check(jobid, graph):
                    cleared = True
                else:  # to be run: Nipype's loop schedules it as usual
                    self.proc_done[jobid] = self.proc_pending[jobid] = False
                    self._uncached.add(jobid)
            if not cleared:
                return

    def _submit_job(self, node, updatehash=False):
        _raise_if_interrupted()  # the deep copy just made may have swallowed the signal
        try:
            return super()._submit_job(node, updatehash=updatehash)
        except BrokenProcessPool:  # a worker died earlier: its nodes have failed, go on
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = self._new_pool()
            return super()._submit_job(node, updatehash=updatehash)

    def _get_result(self, taskid):
        _raise_if_interrupted()
        result = super()._get_result(taskid)
        if result is not None:
            return result
        future = self._task_obj.get(taskid)
        if future is None or not future.done() or future.cancelled():
            return None
        error = future.exception()
        if error is None:  # finished; its callback is about to record the result
            return None
        message = WORKER_DIED.format(error=f"{type(error).__name__}: {error}".rstrip(": "))
        return {"result": None, "traceback": [message], "taskid": taskid}


#: prctl(2) option: the signal this process gets when the thread that created it ends
PR_SET_PDEATHSIG = 1


def worker_initializer(cwd: str, parent: int | None) -> None:
    """Nipype's worker set-up, and :func:`die_with_parent`."""
    die_with_parent(parent)
    process_initializer(cwd)


def die_with_parent(parent: int | None) -> None:
    """Have the kernel send this process SIGKILL when the process that started it dies, and
    leave now when that process, ``parent`` (None: not known), is already gone. Linux only;
    elsewhere nothing changes.

    The kernel ties the signal to the *thread* that forked this process: the pools are made and
    their workers started (at the first ``submit``, with the fork context) by the main thread."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # no usable libc: a worker may then outlive a killed run
        return
    if parent is not None and os.getppid() != parent:  # it died before the prctl call took effect
        os._exit(1)


def _raise_if_interrupted() -> None:
    if interrupt.interrupted():
        raise KeyboardInterrupt
