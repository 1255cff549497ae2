"""Run a Nipype workflow the way lumbo_bids does: Nipype's logging and execution options for the
run, the scheduler (:class:`~lumbo_bids.engine.plugins.SafeMultiProcPlugin`, Linear with one
process), the progress hooks and a clean stop on Ctrl-C."""

from __future__ import annotations

import logging

LOGGER = logging.getLogger("lumbo_bids")


class _FirstLineOnly(logging.Filter):
    """Nipype logs every crashed node's traceback: the crash file keeps it, stderr gets the first
    line (``-v`` shows it all)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "\n" in message:
            record.msg, record.args = message.split("\n", 1)[0], None
        return True


#: how often Nipype's scheduler checks for finished nodes (seconds)
POLL_SECONDS = 0.05


def configure_nipype(config) -> None:
    """Point Nipype's logs away from $HOME and set execution options for this run."""
    from nipype import config as ncfg
    from nipype import logging as nlogging

    log_dir = config.work_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    level = "DEBUG" if config.verbose_count >= 2 else "INFO"  # the terminal shows INFO with -v (console.py)
    ncfg.update_config(
        {
            # log_to_file=False: Nipype's rotating file handler holds a filelock that MultiProc's
            # forked workers inherit, and recent filelock releases refuse it (every node fails).
            "logging": {
                "log_directory": str(log_dir),
                "log_to_file": False,
                "workflow_level": level,
                "interface_level": level,
            },
            "execution": {
                "crashfile_format": "txt",
                "stop_on_first_crash": config.stop_on_first_crash,
                "remove_unnecessary_outputs": False,
                "parameterize_dirs": False,
                "check_version": False,
                "get_linked_libs": False,
                # the scheduler looks for finished nodes every poll: Nipype's 2 s default made each
                # step of a chain of ~25 nodes wait up to 2 s (most of a run's wall time, and a
                # fully cached rerun took minutes to recompute nothing)
                "poll_sleep_duration": POLL_SECONDS,
            },
            "monitoring": {"enabled": False},
        }
    )
    nlogging.update_logging(ncfg)
    # Nipype prints its records through its own stdout handler: drop it, so that they reach
    # our stderr handler once, in our format (with the node, i.e. subject and step)
    nipype_logger = logging.getLogger("nipype")
    for handler in list(nipype_logger.handlers):
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            nipype_logger.removeHandler(handler)
    workflow_logger = logging.getLogger("nipype.workflow")
    if not config.verbose_count and not any(isinstance(f, _FirstLineOnly) for f in workflow_logger.filters):
        workflow_logger.addFilter(_FirstLineOnly())


def plugin_settings(config) -> dict:
    """MultiProc with the user's CPU and memory limits (Linear with a single process)."""
    if config.nprocs == 1:
        return {"plugin": "Linear", "plugin_args": {}}
    args = {"n_procs": config.nprocs, "raise_insufficient": False, "maxtasksperchild": 1}
    if config.mem_gb:
        args["memory_gb"] = config.mem_gb
    return {"plugin": "MultiProc", "plugin_args": args}


def run_workflow(workflow, config, progress=None):
    """``workflow.run`` with :func:`plugin_settings`; on Ctrl-C the workers are stopped cleanly.

    ``progress`` (a :class:`~.progress.ImageProgress`) hears every node start and end."""
    from nipype.pipeline.plugins import LinearPlugin

    from . import interrupt, status
    from .plugins import SafeMultiProcPlugin

    settings = plugin_settings(config)
    plugin_args = {**settings["plugin_args"], "status_callback": _status_callback(progress)}
    plugin = SafeMultiProcPlugin if settings["plugin"] == "MultiProc" else LinearPlugin
    runner = plugin(plugin_args=plugin_args)
    if progress is not None:
        _announce_graph(runner, progress)
    LOGGER.debug("running %s with %s (%d process(es))", workflow.name, settings["plugin"], config.nprocs)
    try:
        return workflow.run(plugin=runner)
    except KeyboardInterrupt:
        interrupt.stop_workers(runner)
        raise
    except RuntimeError:
        if interrupt.interrupted():  # recorded by Nipype as a failing node
            raise KeyboardInterrupt from None
        raise
    finally:
        status.clear()


def _status_callback(progress):
    from . import interrupt

    if progress is None:
        return interrupt.status_callback

    def callback(node, status: str) -> None:
        interrupt.status_callback(node, status)
        progress(node, status)

    return callback


def _announce_graph(runner, progress) -> None:
    """Tell ``progress`` which nodes the plugin is given to run (Nipype's execution graph)."""
    run_graph = runner.run

    def run(graph, *args, **kwargs):
        progress.expect(graph.nodes())
        return run_graph(graph, *args, **kwargs)

    runner.run = run
