"""Entry point: parse -> config -> checks -> build workflow -> run -> report -> exit code."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

from ..errors import ExitCode, LumboError, named

LOGGER = logging.getLogger("lumbo_bids")


def _limit_threads(config) -> None:
    """Thread limits and quiet libraries, before numpy/TensorFlow are imported (creates nothing)."""
    os.environ.setdefault("NIPYPE_NO_ET", "1")
    os.environ.setdefault("NO_ET", "1")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(config.omp_nthreads)


def _setup_environment(config) -> None:
    """Keep every tool's config/cache away from $HOME (read-only containers, shared clusters)."""
    state = config.work_dir / ".state"
    state.mkdir(parents=True, exist_ok=True)
    for var, sub in (
        ("NIPYPE_CONFIG_DIR", "nipype"),
        ("MPLCONFIGDIR", "matplotlib"),
        ("KERAS_HOME", "keras"),
        ("XDG_CACHE_HOME", "cache"),
        ("DENO_DIR", "deno"),  # bids-validator-deno's cache
    ):
        os.environ.setdefault(var, str(state / sub))
        Path(os.environ[var]).mkdir(parents=True, exist_ok=True)


def _setup_logging(verbose_count: int) -> None:
    """Terminal output by verbosity (see :mod:`.console`), TensorFlow's C++ notices included."""
    from . import console

    console.setup(verbose_count)
    console.quiet_tensorflow(verbose_count)


def _error(text: str) -> None:
    from . import console

    console.clear_status()
    try:
        print(f"lumbo-bids: error: {text}", file=sys.stderr)
    except OSError:  # no terminal left to say it to (SIGHUP: it was closed); the exit code says it
        pass


def main(argv: list[str] | None = None) -> int:
    """Run the BIDS App; returns (and, as a console script, exits with) a BEP027 code."""
    from ..engine import interrupt
    from .parser import build_parser

    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose_count)
    interrupt.install()
    try:
        _apply_config_file(args, given_options(argv))
        code = _run(args)
    except LumboError as exc:
        _error(str(exc))
        code = exc.code
    except KeyboardInterrupt:
        name = interrupt.signal_name()
        by = f" by {name}" if name and name != "SIGINT" else ""
        _error(f"interrupted{by}; {interrupted_advice(args.analysis_level)}")
        code = ExitCode.INTERRUPTED
    except Exception as exc:  # a bug or an unforeseen system error: still one line (-v: traceback)
        LOGGER.debug("unexpected error", exc_info=True)
        brief = " ".join(str(exc).split())
        _error(f"unexpected {type(exc).__name__}: {brief} (rerun with -v for details)")
        code = ExitCode.FAILURE
    return int(code)


def interrupted_advice(level: str) -> str:
    """How to go on after an interruption: a participant rerun resumes by itself; the group
    level's fine-tuning continues from its last epoch only with ``--resume``."""
    if level == "group":
        return (
            "finished preprocessing is cached in the work dir; rerun with --resume to continue the "
            "fine-tuning from its last finished epoch (a plain rerun trains again from the start)"
        )
    return "finished steps are cached in the work dir, rerun to resume"


def given_options(argv: list[str]) -> set[str]:
    """The destinations that ``argv`` sets explicitly (a value equal to the default counts too).

    The same parser with every default suppressed: what argparse then returns was typed."""
    import argparse

    from .parser import build_parser

    probe = build_parser()
    for _, action in probe.arguments:
        action.default = argparse.SUPPRESS
    return set(vars(probe.parse_args(argv)))


def _apply_config_file(args, given: set[str]) -> None:
    """Fill fine-tuning settings from ``--config-file``: command line > config file > built-in default."""
    import argparse
    import json

    from .arg_types import CONFIG_FILE_OPTIONS

    if not getattr(args, "config_file", None):
        return
    path = Path(args.config_file)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise LumboError(f"--config-file {path}: {exc.strerror}", ExitCode.NO_INPUT) from None
    except json.JSONDecodeError as exc:
        raise LumboError(f"--config-file {path}: not valid JSON ({exc.msg}, line {exc.lineno})", ExitCode.USAGE) from None
    if not isinstance(data, dict):
        raise LumboError(f"--config-file {path}: must hold a JSON object", ExitCode.USAGE)
    for key, convert in CONFIG_FILE_OPTIONS.items():
        if key not in data or key in given:
            continue
        try:
            setattr(args, key, convert(data[key]))
        except argparse.ArgumentTypeError as exc:
            raise LumboError(f"--config-file {path}: {key}: {exc}", ExitCode.USAGE) from None


def _run(args) -> ExitCode:
    import contextlib

    from ..config import Config
    from . import console
    from .checks import removed_if_empty_on_error
    from .locks import subject_locks

    config = Config.from_namespace(args)
    _limit_threads(config)
    with contextlib.ExitStack() as locks:
        # nothing is written until every check passed: an early failure leaves no empty folders
        with removed_if_empty_on_error(config.output_dir, config.work_dir):
            config.check_paths()
            raw_description, inputs = _select_inputs(config, labels_dir_given=args.labels_dir is not None)
            locks.enter_context(subject_locks(config.work_dir, inputs, config.output_dir))  # 'already running': 75
        _setup_environment(config)
        console.log_to_file(config.log_file)
        return _run_level(config, raw_description, inputs)


def _run_level(config, raw_description: dict, inputs: dict) -> ExitCode:
    from ..derivatives import write_dataset_files
    from ..model.selection import unpack_model

    with named("--model"):
        config.model = unpack_model(config.model, config.work_dir)  # kept in the work dir, see there
    if config.clean_workdir and config.nipype_dir.exists():
        LOGGER.info("removing %s (--clean-workdir)", config.nipype_dir)
        shutil.rmtree(config.nipype_dir)
    if config.analysis_level == "participant":
        from ..participant import run_participant

        write_dataset_files(config.output_dir, config.bids_dir, raw_description)
        return run_participant(config, inputs)
    from ..group.run import run_group

    code = run_group(config, inputs)
    if code == ExitCode.OK:  # a failed group run leaves no dataset_description.json behind
        write_dataset_files(config.output_dir, config.bids_dir, raw_description)
    return code


def _select_inputs(config, labels_dir_given: bool) -> tuple[dict, dict]:
    """Every check on the inputs, writing nothing: ``(raw dataset_description, inputs)``."""
    from ..model.selection import check_models
    from ..utils import bids
    from .checks import check_input_options, check_subject_outputs

    check_input_options(config, labels_dir_given)
    raw_description = bids.read_dataset_description(config.bids_dir)
    with named("--bids-filter-file"):
        filters = bids.load_filters(config.bids_filter_file)
    layout = bids.build_layout(config.bids_dir, config.bids_database_dir)
    with named("--bids-filter-file"):
        bids.check_filters(layout, filters, config.bids_filter_file)
    subjects = bids.select_subjects(layout, config.participant_label)
    if not config.skip_bids_validation:
        bids.validate_dataset(config.bids_dir, subjects)
    inputs = bids.collect_anat(layout, subjects, config.session_label, filters, config.labels_dir)
    if config.participant_label:
        for subject in (s for s in subjects if s not in inputs):
            LOGGER.warning(
                "sub-%s (--participant-label): no anatomical image%s; nothing to do for it",
                subject, " selected by --bids-filter-file/--session-label" if filters or config.session_label else "",
            )  # fmt: skip
    LOGGER.info(
        "lumbo_bids %s: %s level, %d subject(s), %d image(s), run %s",
        _version(),
        config.analysis_level,
        len(inputs),
        sum(map(len, inputs.values())),
        config.run_uuid,
    )
    if config.analysis_level == "participant":
        check_models(config, inputs)  # a bad --model or --sct-models is refused before anything is written
        check_subject_outputs(config.output_dir, inputs)
    else:
        from ..group.inputs import check_group_inputs

        check_group_inputs(config, inputs)
    return raw_description, inputs


def _version() -> str:
    from .. import __version__

    return __version__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
