"""Our multi-process scheduler: a Nipype plugin of our own (as niworkflows keeps one), built on
Nipype's plugin base, :class:`~nipype.pipeline.plugins.base.DistributedPluginBase` (the dependency
graph, the cache check, crash files: the protocol every Nipype plugin follows), with its own pool
of workers, task records and resource accounting, so that it does not depend on the private
fields of Nipype's ``MultiProcPlugin``. It schedules as MultiProc does (the CPUs and memory that
``n_procs``/``memory_gb`` allow, each node's ``n_procs``/``mem_gb``), and it is safe against two
ways MultiProc can wait forever, and quick on a rerun.

1. **A worker that dies.** MultiProc records a node's result from its future's done-callback,
   which assumes the future holds a result. When a worker process dies (killed by the
   out-of-memory killer, a signal, or a node it cannot unpickle), the executor breaks, every
   pending future holds ``BrokenProcessPool`` instead, the callback fails in a background
   thread, and MultiProc polls for results that never come. Here such a future becomes a
   failed node, with a line that says what happened; the next node gets a fresh pool of
   workers, so the other images go on.
2. **A swallowed Ctrl-C.** Nipype deep-copies each node before submitting it, and the spec's
   ``__deepcopy__`` has a bare ``except: pass``: a SIGINT that lands there is lost (and the
   half-copied node then kills the worker that unpickles it). :mod:`.interrupt` still records
   the signal, so this scheduler checks that record on every poll and after every copy.

And **workers that die with the run**: a main process killed outright (SIGKILL, the out-of-memory
killer) cannot stop its workers, which were then left waiting for work for ever, holding the
subject's lock (they inherit its file). Each worker asks the kernel for SIGKILL when the main process
dies (Linux: ``prctl(PR_SET_PDEATHSIG)``), so the lock is free again at once (:mod:`.locks`).

And **a cached rerun in one poll**: MultiProc reserves a ready node's CPUs and memory *before*
looking in the cache, and does not give them back when the node turns out to be cached; so there
each poll clears at most ``n_procs`` cached nodes, and a rerun of a study with nothing to do takes one
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
import logging
import multiprocessing
import os
import signal
import sys
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from copy import deepcopy
from traceback import format_exception

import numpy as np
from nipype.pipeline.engine import MapNode
from nipype.pipeline.plugins.base import DistributedPluginBase
from nipype.utils.profiler import get_system_total_memory_gb

from . import interrupt

LOGGER = logging.getLogger("nipype.workflow")
#: what a failed node's traceback says when its worker process died
WORKER_DIED = (
    "the worker process running this node died ({error}); "
    "if it ran out of memory, give the run more (--mem) or fewer processes (--nprocs)"
)
#: what it says when the node could not be sent to a worker or its result not sent back
NOT_SENT = "the node could not be passed to or from its worker process ({error})"


def run_node(node, updatehash: bool, taskid: int) -> dict:
    """In a worker: run ``node``; ``{"result", "traceback", "taskid"}`` (a failure's traceback)."""
    outcome = {"result": None, "traceback": None, "taskid": taskid}
    try:
        outcome["result"] = node.run(updatehash=updatehash)
    except BaseException:
        outcome["traceback"] = format_exception(*sys.exc_info())
        outcome["result"] = node.result
    return outcome


class SafeMultiProcPlugin(DistributedPluginBase):
    """Run a workflow's nodes in a pool of ``n_procs`` worker processes, within ``memory_gb``.

    ``plugin_args``: ``n_procs`` (default: the CPUs), ``memory_gb`` (default: 90% of the
    machine's), ``raise_insufficient`` (refuse a node asking for more than that; default True),
    ``mp_context``, ``status_callback`` (Nipype's: ``callback(node, "start" | "end" | "exception")``).
    """

    def __init__(self, plugin_args=None):
        super().__init__(plugin_args=plugin_args)
        self.processors = int(self.plugin_args.get("n_procs") or multiprocessing.cpu_count())
        self.memory_gb = float(self.plugin_args.get("memory_gb") or get_system_total_memory_gb() * 0.9)
        self.raise_insufficient = bool(self.plugin_args.get("raise_insufficient", True))
        self._cwd = os.getcwd()
        self._futures: dict[int, Future] = {}  # task id -> its future, until the task is cleared
        self._last_taskid = 0
        self._uncached: set[int] = set()  # ready nodes found not cached: waiting for a worker
        self.pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        """A pool of workers, each of which dies with this process (:func:`worker_initializer`)."""
        context = multiprocessing.get_context(self.plugin_args.get("mp_context"))
        # a forkserver's workers are its children, not this process's
        parent = os.getpid() if context.get_start_method() in ("fork", "spawn") else None
        return ProcessPoolExecutor(
            max_workers=self.processors, initializer=worker_initializer, initargs=(self._cwd, parent), mp_context=context
        )

    def run(self, graph, config, updatehash=False):
        gc.collect()
        gc.freeze()
        try:
            return super().run(graph, config, updatehash=updatehash)
        finally:
            gc.unfreeze()

    # -- the plugin protocol (DistributedPluginBase) -----------------------------------------
    def _prerun_check(self, graph) -> None:
        """Refuse (``raise_insufficient``) or warn about a node asking for more than the run has."""
        for what, wanted, limit in (
            ("memory (GB)", max((n.mem_gb for n in graph.nodes()), default=0), self.memory_gb),
            ("threads", max((n.n_procs for n in graph.nodes()), default=0), self.processors),
        ):
            if wanted > limit:
                LOGGER.warning("Some nodes demand more %s than available (%s).", what, limit)
                if self.raise_insufficient:
                    raise RuntimeError("Insufficient resources available for job")

    def _postrun_check(self) -> None:
        self.pool.shutdown()

    def _submit_job(self, node, updatehash=False):
        _raise_if_interrupted()  # the deep copy just made may have swallowed the signal
        if getattr(node.interface, "terminal_output", "") == "stream":
            node.interface.terminal_output = "allatonce"
        self._last_taskid += 1
        try:
            future = self.pool.submit(run_node, node, updatehash, self._last_taskid)
        except BrokenProcessPool:  # a worker died earlier: its nodes have failed, go on
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = self._new_pool()
            future = self.pool.submit(run_node, node, updatehash, self._last_taskid)
        self._futures[self._last_taskid] = future
        return self._last_taskid

    def _get_result(self, taskid):
        """The task's result once its future is done; a future broken by a dead worker is a failed node."""
        _raise_if_interrupted()
        future = self._futures.get(taskid)
        if future is None or not future.done() or future.cancelled():
            return None
        error = future.exception()
        if error is None:
            return future.result()
        what = f"{type(error).__name__}: {error}".rstrip(": ")
        message = WORKER_DIED.format(error=what) if isinstance(error, BrokenProcessPool) else NOT_SENT.format(error=what)
        return {"result": None, "traceback": [message], "taskid": taskid}

    def _clear_task(self, taskid) -> None:
        self._futures.pop(taskid, None)

    def _send_procs_to_workers(self, updatehash=False, graph=None):
        """Clear the cached ready nodes, then give each ready node that fits the free CPUs and
        memory to a worker (or run it here: ``run_without_submitting``)."""
        _raise_if_interrupted()
        if not updatehash:
            self._clear_cached(graph)
        free_gb, free_cpus = self._free_resources()
        if free_gb < 0.01 or free_cpus == 0:
            return
        for jobid in self._ready():
            if isinstance(self.procs[jobid], MapNode) and not self._expand_mapnode(jobid, graph):
                continue
            needs_gb = min(self.procs[jobid].mem_gb_runtime, self.memory_gb)
            needs_cpus = min(self.procs[jobid].n_procs, self.processors)
            if needs_cpus > free_cpus or needs_gb > free_gb:
                continue  # does not fit now: a later poll
            self.proc_done[jobid] = self.proc_pending[jobid] = True
            if self._local_hash_check(jobid, graph):  # cached and up to date
                continue
            if self._runs_here(jobid, updatehash):
                self._run_here(jobid, graph, updatehash)
                continue
            free_gb, free_cpus = free_gb - needs_gb, free_cpus - needs_cpus
            self._start(jobid, updatehash)

    # -- scheduling ---------------------------------------------------------------------------
    def _ready(self) -> np.ndarray:
        """The nodes not done whose dependencies all are."""
        return np.flatnonzero(~self.proc_done & (self.depidx.sum(axis=0) == 0).__array__())

    def _free_resources(self) -> tuple[float, int]:
        """``(memory GB, CPUs)`` that the running nodes leave free."""
        free_gb, free_cpus = self.memory_gb, self.processors
        for _, jobid in self.pending_tasks:
            free_gb -= min(self.procs[jobid].mem_gb, free_gb)
            free_cpus -= min(self.procs[jobid].n_procs, free_cpus)
        return free_gb, free_cpus

    def _clear_cached(self, graph) -> None:
        """Mark every ready, cached node done (Nipype's own check: ``_local_hash_check``), and
        again for the nodes that this makes ready, until none is left. A ready node found not
        cached is not hashed again while it waits for a worker (its inputs are final)."""
        while True:
            cleared = False
            for jobid in self._ready():
                if jobid in self._uncached or isinstance(self.procs[jobid], MapNode):
                    continue  # MapNodes are expanded into sub-nodes first
                self.proc_done[jobid] = self.proc_pending[jobid] = True
                if self._local_hash_check(jobid, graph):
                    cleared = True
                else:  # to be run: scheduled as usual
                    self.proc_done[jobid] = self.proc_pending[jobid] = False
                    self._uncached.add(jobid)
            if not cleared:
                return

    def _expand_mapnode(self, jobid: int, graph) -> bool:
        """Expand a MapNode into its sub-nodes (Nipype's ``_submit_mapnode``); False when it has
        been expanded (its sub-nodes run instead) or cannot be (a failed node)."""
        try:
            subnodes = self.procs[jobid].num_subnodes()
        except Exception:
            self._clean_queue(jobid, graph, result={"result": None, "traceback": format_exception(*sys.exc_info())})
            self.proc_pending[jobid] = False
            return False
        return subnodes <= 1 or bool(self._submit_mapnode(jobid))

    def _runs_here(self, jobid: int, updatehash: bool) -> bool:
        cached, updated = self.procs[jobid].is_cached()
        return (cached and updatehash and not updated) or self.procs[jobid].run_without_submitting

    def _run_here(self, jobid: int, graph, updatehash: bool) -> None:
        """Run a node in this process (a sink, a node only re-hashed)."""
        try:
            self.procs[jobid].run(updatehash=updatehash)
        except Exception:
            traceback = format_exception(*sys.exc_info())
            self._run_errors.append(traceback)
            self._clean_queue(jobid, graph, result={"result": None, "traceback": traceback})
        self._task_finished_cb(jobid)
        self._remove_node_dirs()
        gc.collect()  # only what the run made since it started (gc.freeze in run)

    def _start(self, jobid: int, updatehash: bool) -> None:
        """Give a node to a worker (a deep copy: the worker runs it apart from the graph)."""
        if self._status_callback:
            self._status_callback(self.procs[jobid], "start")
        taskid = self._submit_job(deepcopy(self.procs[jobid]), updatehash=updatehash)
        if taskid is None:
            self.proc_done[jobid] = self.proc_pending[jobid] = False
        else:
            self.pending_tasks.insert(0, (taskid, jobid))


#: prctl(2) option: the signal this process gets when the thread that created it ends
PR_SET_PDEATHSIG = 1


def worker_initializer(cwd: str, parent: int | None) -> None:
    """A worker's set-up: :func:`die_with_parent`, the run's folder, no Nipype version check."""
    die_with_parent(parent)
    os.chdir(cwd)
    os.environ["NIPYPE_NO_ET"] = "1"


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
