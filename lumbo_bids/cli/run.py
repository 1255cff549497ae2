"""Entry point: parse -> config -> checks -> build workflow -> run -> report -> exit code."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

from ..errors import ExitCode, LumboError

LOGGER = logging.getLogger("lumbo_bids")


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
    os.environ.setdefault("NIPYPE_NO_ET", "1")
    os.environ.setdefault("NO_ET", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(config.omp_nthreads)


def _setup_logging(verbose_count: int) -> None:
    level = logging.WARNING - 10 * min(verbose_count + 1, 2)  # INFO by default, DEBUG with -v
    logging.basicConfig(
        level=level,
        format="%(asctime)s [%(name)s] %(levelname)s: %(message)s",
        datefmt="%y%m%d-%H:%M:%S",
        stream=sys.stderr,
    )
    logging.getLogger("lumbo_bids").setLevel(level)
    for noisy in ("bids", "matplotlib", "h5py", "absl", "tensorflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    """Run the BIDS App; returns (and, as a console script, exits with) a BEP027 code."""
    from .parser import build_parser

    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose_count)
    try:
        code = _run(args)
    except LumboError as exc:
        print(f"lumbo-bids: error: {exc}", file=sys.stderr)
        code = exc.code
    except KeyboardInterrupt:
        print("lumbo-bids: interrupted", file=sys.stderr)
        code = ExitCode.FAILURE
    return int(code)


def _run(args) -> ExitCode:
    from ..config import Config
    from ..utils import bids

    config = Config.from_namespace(args)
    config.check_paths()
    raw_description = bids.read_dataset_description(config.bids_dir)
    _setup_environment(config)
    filters = bids.load_filters(config.bids_filter_file)
    layout = bids.build_layout(config.bids_dir, config.bids_database_dir)
    subjects = bids.select_subjects(layout, config.participant_label)
    if not config.skip_bids_validation:
        bids.validate_dataset(config.bids_dir, subjects)
    inputs = bids.collect_anat(layout, subjects, config.session_label, filters, config.labels_dir)
    LOGGER.info(
        "lumbo_bids %s: %s level, %d subject(s), %d image(s), run %s",
        _version(), config.analysis_level, len(inputs), sum(map(len, inputs.values())), config.run_uuid,
    )
    if config.clean_workdir and config.nipype_dir.exists():
        LOGGER.info("removing %s (--clean-workdir)", config.nipype_dir)
        shutil.rmtree(config.nipype_dir)

    from ..derivatives import write_dataset_files

    write_dataset_files(config.output_dir, config.bids_dir, raw_description)
    if config.analysis_level == "participant":
        from .participant import run_participant

        return run_participant(config, inputs)
    from .group import run_group

    return run_group(config, inputs)


def _version() -> str:
    from .. import __version__

    return __version__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
