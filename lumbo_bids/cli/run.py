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

    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose_count)
    try:
        _apply_config_file(args, parser)
        code = _run(args)
    except LumboError as exc:
        print(f"lumbo-bids: error: {exc}", file=sys.stderr)
        code = exc.code
    except KeyboardInterrupt:
        print("lumbo-bids: interrupted", file=sys.stderr)
        code = ExitCode.FAILURE
    return int(code)


#: settings a --config-file may hold, and the option each stands for
CONFIG_FILE_KEYS = {
    "learning_rate": "learning_rate", "epochs": "epochs", "augmentation": "augmentation", "loss": "loss",
    "steps_per_epoch": "steps_per_epoch", "batch_size": "batch_size", "freeze": "freeze",
    "patch_size": "patch_size", "init_model": "init_model",
}  # fmt: skip


def _apply_config_file(args, parser) -> None:
    """Fill fine-tuning settings from ``--config-file`` where the command line left the default."""
    import json

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
    for key, dest in CONFIG_FILE_KEYS.items():
        if key not in data or getattr(args, dest, None) != parser.get_default(dest):
            continue
        value = data[key]
        if key == "init_model":
            value = None if value == "shipped" else Path(value)
        elif key == "patch_size":
            value = tuple(int(v) for v in value)
        setattr(args, dest, value)


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
