"""Participant level: build and run the Nipype workflow, then report per-subject failures."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import NamedTuple

from .derivatives import subject_report_path
from .engine.runner import configure_nipype, run_workflow
from .errors import ExitCode, OutputError, output_error

LOGGER = logging.getLogger("lumbo_bids")


class Failure(NamedTuple):
    """One failed step of a subject: the line that says what went wrong, and its exit code."""

    text: str
    code: ExitCode = ExitCode.FAILURE


def run_participant(config, inputs: dict) -> ExitCode:
    """Run the participant workflow; keep going past failing subjects and images, report them."""
    from .utils.bids import split_available

    configure_nipype(config)
    available, missing = split_available(inputs)  # unfetched git-annex/DataLad files fail alone
    started = time.time()
    try:
        crashed = _run_available(config, available, inputs)
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM (SLURM at the walltime), SIGHUP: index what is done
        _index_finished(config, inputs, time.time() - started)
        raise
    failures = collect_failures(config, inputs)
    for subject, lines in missing.items():
        failures[subject] = [Failure(line) for line in lines] + failures.get(subject, [])
    report_failures = write_reports(config, inputs, failures, time.time() - started)
    report_failures += write_study_page(config)
    log_warnings(config, inputs)
    code = _report_failures(config, inputs, failures, crashed, report_failures)
    announce_reports(config, inputs)
    return code


def _index_finished(config, inputs: dict, seconds: float) -> None:
    """After an interruption: the subject reports and the study page over the outputs finished
    so far, so that a run stopped at its walltime still shows what it did. Best effort: a failure
    here (or a second signal) must not hide the interruption, which is what the run says."""
    try:
        write_reports(config, inputs, {}, seconds)
        write_study_page(config)
    except (Exception, KeyboardInterrupt) as exc:
        LOGGER.debug("no reports after the interruption: %r", exc)


def image_progress(config, available: dict):
    """An :class:`~.progress.ImageProgress` over the images that run, ending each image's line
    with its Dice (when it has a manual mask), where its centerline came from and its report."""
    from .engine.progress import ImageProgress
    from .workflows.base import anat_wf_name

    anats = {anat_wf_name(anat): anat for items in available.values() for anat in items}
    labels = {key: anat.label for key, anat in anats.items()}
    return ImageProgress(labels, lambda key: image_summary(config, anats[key]), announce="segment")


def image_summary(config, anat) -> str:
    """``Dice 0.871 · flags: none · centerline: manual mask · report OUT/sub-X.html`` from the
    image's sidecars (``flags``: the QC failure flags the mask raised, lumbo_bids.qc)."""
    from .derivatives import image_output_path, read_json

    parts = []
    evaluation = read_json(image_output_path(config.output_dir, anat, "evaluation", extension=".json")) or {}
    if isinstance(evaluation.get("Dice"), int | float):
        parts.append(f"Dice {evaluation['Dice']:.3f}")
    mask_meta = read_json(image_output_path(config.output_dir, anat, "mask", extension=".json")) or {}
    if isinstance(mask_meta.get("QCFlags"), list):
        parts.append("flags: " + (", ".join(map(str, mask_meta["QCFlags"])) or "none"))
    method = mask_meta.get("CenterlineMethod")
    if method:  # "manual mask", or "automatic (<localiser model>)": the sidecar and report name the model
        parts.append("centerline: " + ("localiser" if str(method).startswith("automatic") else str(method)))
    parts.append(f"report {shown_path(subject_report_path(config.output_dir, anat.subject))}")
    return " · ".join(parts)


def shown_path(path: Path) -> str:
    """``path`` relative to the current folder when it lies inside it, else as it is."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def announce_reports(config, inputs: dict) -> None:
    """The run's last lines: where the QC reports, the study QC page and the full log are."""
    from .reports.study import study_page_path

    reports = [subject_report_path(config.output_dir, subject) for subject in inputs]
    reports = [path for path in reports if path.is_file()]
    if reports:
        LOGGER.info("QC reports (open in a web browser):")
        for path in reports:
            LOGGER.info("  %s", shown_path(path))
    study = study_page_path(config.output_dir)
    if study.is_file():
        LOGGER.info("study QC page (every image; sort, rate, export ratings): %s", shown_path(study))
    LOGGER.info("full log: %s", shown_path(config.log_file))


def _run_available(config, available: dict, inputs: dict) -> bool:
    """Build and run the workflow of the images whose files are present; True if it crashed.

    :class:`OutputError` (exit 73) when OUTPUT_DIR cannot take this run's config.json, or
    not even the crash file of a derivative that could not be written (a full disk).
    """
    from .workflows.base import init_lumbo_wf

    workflow = init_lumbo_wf(config, available) if available else None
    try:
        for subject in inputs:
            config.dump(config.output_dir / f"sub-{subject}" / "log" / config.run_uuid / "config.json")
        if workflow is None:
            return False
        run_workflow(workflow, config, image_progress(config, available))
    except RuntimeError as exc:  # Nipype: "Workflow did not execute cleanly"
        LOGGER.debug("workflow error: %s", exc)
        return True
    except OSError as exc:
        raise _output_failure(exc, config.output_dir) from None
    return False


_OUTPUT_ERROR = re.compile(r"OutputError: (.+)$", re.MULTILINE)


def _output_failure(exc: OSError, output_dir: Path) -> Exception:
    """What to report for an OSError out of the run: the derivative that could not be written
    when Nipype failed while reporting it (its crash file could not be written either), else
    the file of the error itself when the output cannot be created, else ``exc``."""
    context, seen = exc.__context__, 0
    while context is not None and seen < 10:  # the node's error, under the crash file's
        if causes := _OUTPUT_ERROR.findall(str(context)):
            return OutputError(causes[-1])
        context, seen = context.__context__, seen + 1
    return output_error(exc, exc.filename or output_dir) or exc


def _report_failures(
    config, inputs: dict, failures: dict[str, list[Failure]], crashed: bool, report_failures: list[Failure]
) -> ExitCode:
    for subject in inputs:
        for failure in failures.get(subject, []):
            LOGGER.error("sub-%s failed: %s", subject, failure.text)
    codes = {f.code for lines in failures.values() for f in lines} | {f.code for f in report_failures}
    if not (failures or crashed or report_failures):
        return ExitCode.OK
    if failures or crashed:
        LOGGER.error(
            "%d of %d subject(s) failed (crash files under %s/sub-*/log/%s)",
            len(failures) or len(inputs), len(inputs), config.output_dir, config.run_uuid,
        )  # fmt: skip
    # a derivative or report that could not be written (disk full, read-only...) says 73
    return ExitCode.CANT_CREATE if ExitCode.CANT_CREATE in codes else ExitCode.FAILURE


def log_warnings(config, inputs: dict) -> None:
    """One line per warning the derivatives' sidecars record, naming the input it is about."""
    from .reports.subject import recorded_warnings

    for subject, anats in inputs.items():
        for anat in anats:
            for path, text in recorded_warnings(config.output_dir, anat):
                LOGGER.warning("sub-%s: %s: %s", subject, path, text)


def write_reports(config, inputs: dict, failures: dict[str, list[Failure]], seconds: float) -> list[Failure]:
    """One HTML report per subject, from the derivatives (also for subjects that failed);
    the reports that could not be written because the output cannot be created."""
    from . import __version__
    from .model.selection import read_segmentation_model
    from .reports.subject import write_subject_report
    from .workflows.outputs import resolution_entity

    res = resolution_entity(read_segmentation_model(config.model).plan.with_overrides(config).resolution)
    not_written = []
    for subject, anats in inputs.items():
        LOGGER.debug("sub-%s: writing the QC report", subject)
        run_info = {
            "lumbo_bids version": __version__,
            "Run": config.run_uuid,
            "Images": len(anats),
            "Workflow run time (all subjects of this run, s)": round(seconds, 1),
            "Segmentation model": str(config.model or "shipped base model"),
            "Processes / threads": f"{config.nprocs} / {config.omp_nthreads}",
        }
        report = subject_report_path(config.output_dir, subject)
        lines = [f.text for f in failures.get(subject, [])]
        try:
            write_subject_report(config.output_dir, subject, anats, res, lines, run_info, cache_dir=config.work_dir)
        except OSError as exc:
            if (error := output_error(exc)) is None:
                LOGGER.warning("sub-%s: could not write the report %s: %s", subject, report, exc)
                continue
            LOGGER.error("sub-%s: the report: %s", subject, error)
            not_written.append(Failure(str(error), error.code))
        except Exception as exc:  # a report must never hide the results themselves
            LOGGER.warning("sub-%s: could not write the report %s: %s", subject, report, exc)
    return not_written


def write_study_page(config) -> list[Failure]:
    """``OUTPUT_DIR/qc/index.html`` from every subject in OUTPUT_DIR (this run's and others');
    a failure when the output cannot be created, a warning for anything else."""
    from .reports.study import study_page_path
    from .reports.study import write_study_page as write_page

    page = study_page_path(config.output_dir)
    try:
        write_page(config.output_dir)
    except OSError as exc:
        if (error := output_error(exc)) is None:
            LOGGER.warning("could not write the study QC page %s: %s", page, exc)
            return []
        LOGGER.error("the study QC page: %s", error)
        return [Failure(str(error), error.code)]
    except Exception as exc:  # a report must never hide the results themselves
        LOGGER.warning("could not write the study QC page %s: %s", page, exc)
    return []


_ERROR_LINE = re.compile(r"^(?P<type>[A-Za-z_.]+(?:Error|Exception)): (?P<message>.+)$")
#: exit code of a node's failure, by the exception's class name (others: 1)
_CRASH_CODES = {"OutputError": ExitCode.CANT_CREATE}


def collect_failures(config, inputs: dict) -> dict[str, list[Failure]]:
    """One line per crashed node of each subject, read from this run's crash files."""
    failures: dict[str, list[Failure]] = {}
    for subject in inputs:
        crash_dir = config.output_dir / f"sub-{subject}" / "log" / config.run_uuid
        for crash in sorted(crash_dir.glob("crash-*.txt")):
            failures.setdefault(subject, []).append(summarise_crash(crash))
    return failures


def summarise_crash(crash: Path) -> Failure:
    """The node name and the last exception message of a Nipype text crash file, and the
    exit code that exception calls for."""
    text = crash.read_text(encoding="utf-8", errors="replace").splitlines()
    node = next((line.split(":", 1)[1].strip() for line in text if line.startswith("Node:")), crash.name)
    match = next((m for line in reversed(text) if (m := _ERROR_LINE.match(line.strip()))), None)
    if match is None:
        return Failure(f"{node}: see {crash}")
    code = _CRASH_CODES.get(match["type"].rsplit(".", 1)[-1], ExitCode.FAILURE)
    return Failure(f"{node}: {match['message']}", code)
