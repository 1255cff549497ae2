"""One settings object for a run, built from the command line and dumped next to the outputs."""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from . import __version__, options
from .errors import ExitCode, LumboError, MissingInputError, OutputError, UsageError

LEVELS = ("participant", "group")


def version_tag() -> str:
    """``major_minor`` of the package version: names the work folder so caches never mix."""
    major, minor = __version__.split(".")[:2]
    return f"{major}_{minor}"


def new_run_uuid() -> str:
    """fMRIPrep-style run id: timestamp + random uuid."""
    return f"{datetime.now():%Y%m%d-%H%M%S}_{uuid.uuid4()}"


@dataclass
class Config:
    """Everything a run needs; paths are absolute."""

    bids_dir: Path
    output_dir: Path
    analysis_level: str
    work_dir: Path
    participant_label: list[str] | None = None
    session_label: list[str] | None = None
    bids_filter_file: Path | None = None
    skip_bids_validation: bool = False
    bids_database_dir: Path | None = None
    labels_dir: Path | None = None
    nprocs: int = 1
    omp_nthreads: int = 1
    mem_gb: float | None = None
    stop_on_first_crash: bool = False
    clean_workdir: bool = False
    random_seed: int = 42
    verbose_count: int = 0
    # segmentation
    model: Path | None = None
    sct_models: Path | None = None
    resolution: float | None = None
    crop_size: tuple[int, int] | None = None
    threshold: float | None = None
    overlap: float | None = None
    tta: bool = False
    save_probseg: bool = False
    ignore_manual_centerline: bool = False
    # group level
    init_model: Path | None = None
    from_scratch: bool = False
    epochs: int = options.EPOCHS
    steps_per_epoch: int = options.STEPS_PER_EPOCH
    batch_size: int = options.BATCH_SIZE
    learning_rate: float = options.LEARNING_RATE
    loss: str = options.LOSS
    freeze_encoder: bool = False
    patience: int = options.PATIENCE
    validation_fraction: float = options.VALIDATION_FRACTION
    validation_subjects: list[str] | None = None
    augmentation: float = options.AUGMENTATION
    resume: bool = False
    freeze: str | None = None  # from --config-file: none / encoder / all_but_last
    patch_size: tuple[int, int, int] | None = None  # from --config-file (default: the model's)
    config_file: Path | None = None
    search: Path | None = None
    ray_address: str | None = None
    qc_ratings: Path | None = None  # group level: images rated 'fail' on the study page are left out
    accepted_masks: bool = True  # group level: automatic masks rated 'pass' (no manual mask) are labels
    localiser_finetune: bool = True
    keep_worse_localiser: bool = False  # group level: ship a fine-tuned localiser even if its validation centerline got worse
    localiser_epochs: int = options.LOCALISER_EPOCHS
    localiser_steps: int = options.LOCALISER_STEPS_PER_EPOCH
    learning_curve: bool = False
    run_uuid: str = field(default_factory=new_run_uuid)

    @classmethod
    def from_namespace(cls, namespace) -> Config:
        """Build from argparse's namespace, filling defaults that depend on the machine."""
        values = {k: v for k, v in vars(namespace).items() if k in cls.__dataclass_fields__}
        config = cls(**values)
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        config.nprocs = namespace.nprocs or cpus
        config.omp_nthreads = min(namespace.omp_nthreads or config.nprocs, config.nprocs)
        if config.labels_dir is None:
            config.labels_dir = config.bids_dir / "derivatives" / "labels"
        if config.crop_size is not None:
            config.crop_size = tuple(config.crop_size)
        return config

    @property
    def nipype_dir(self) -> Path:
        """This version's Nipype base directory inside the work dir."""
        return self.work_dir / f"lumbo_bids_{version_tag()}_wf"

    @property
    def log_file(self) -> Path:
        """This run's log: everything our loggers and Nipype say, whatever the verbosity."""
        return self.work_dir / "logs" / f"{self.run_uuid}.log"

    def check_paths(self) -> None:
        """Refuse layouts that could destroy input data (one-line errors, BEP027 codes)."""
        if self.analysis_level not in LEVELS:
            raise LumboError(
                f"unknown analysis level {self.analysis_level!r}: use 'participant' or 'group'",
                ExitCode.UNKNOWN_LEVEL,
            )
        if not self.bids_dir.is_dir():
            raise MissingInputError(f"BIDS_DIR {self.bids_dir} does not exist or is not a folder")
        bids = self.bids_dir.resolve()
        suggestion = bids / "derivatives" / "lumbo_bids"
        out = self.output_dir.resolve()
        if out == bids:
            raise UsageError(
                f"OUTPUT_DIR {self.output_dir} is the BIDS dataset itself; use e.g. {suggestion}",
            )
        if bids in out.parents and not _is_derivatives_subfolder(out, bids):
            raise UsageError(
                f"OUTPUT_DIR {self.output_dir} is inside the BIDS dataset; use e.g. {suggestion}",
            )
        work = self.work_dir.resolve()
        if work == bids or bids in work.parents:
            raise UsageError(
                f"--work-dir {self.work_dir} is inside the BIDS dataset {self.bids_dir}; put it elsewhere",
            )
        for label, path in (
            ("--bids-filter-file", self.bids_filter_file),
            ("--model", self.model),
            ("--sct-models", self.sct_models),
            ("--init-model", self.init_model),
            ("--qc-ratings", self.qc_ratings),
        ):
            if path is not None and not path.exists():
                raise MissingInputError(f"{label} {path} does not exist")
        self._check_output_is_ours(bids)
        for label, path in (("OUTPUT_DIR", self.output_dir), ("--work-dir", self.work_dir)):
            taken = next((p for p in (path, *path.parents) if p.exists()), None)
            if taken is not None and not taken.is_dir():
                raise OutputError(f"{label} {path}: {taken} is a file, not a folder; give a folder")
            try:
                path.mkdir(parents=True, exist_ok=True)
                probe = path / f".lumbo_bids_write_test_{os.getpid()}"
                probe.touch()
                probe.unlink()
            except OSError as exc:
                raise OutputError(f"cannot create or write {label} {path}: {exc.strerror}") from None

    def _check_output_is_ours(self, bids: Path) -> None:
        """OUTPUT_DIR must not be another dataset: not one holding the input or the labels, nor
        one whose dataset_description.json lumbo_bids did not write (it would be overwritten).
        Checked before anything is created."""
        from .derivatives import foreign_dataset

        out = self.output_dir.resolve()
        if out in bids.parents:
            raise UsageError(f"OUTPUT_DIR {self.output_dir} contains the BIDS dataset {self.bids_dir}; give a folder of its own")
        if self.labels_dir is not None:
            labels = self.labels_dir.resolve()
            relation = (
                "is" if out == labels else "contains" if out in labels.parents else "is inside" if labels in out.parents else None
            )
            if relation:
                raise UsageError(
                    f"OUTPUT_DIR {self.output_dir} {relation} the --labels-dir dataset {self.labels_dir}, "
                    "which is never written to; give a folder of its own",
                )
        if self.output_dir.is_dir() and (reason := foreign_dataset(self.output_dir)):
            raise UsageError(
                f"OUTPUT_DIR {self.output_dir} is another dataset ({reason}); give a new folder, "
                "or one that lumbo_bids wrote before",
            )

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self), default=str))

    def dump(self, path: Path) -> Path:
        from .derivatives import atomic_write_json

        return atomic_write_json(path, {"lumbo_bids_version": __version__, **self.to_dict()})


def _is_derivatives_subfolder(out: Path, bids: Path) -> bool:
    """``BIDS_DIR/derivatives/<name>`` is the conventional place for derivatives: allowed."""
    try:
        parts = out.relative_to(bids).parts
    except ValueError:
        return False
    return len(parts) >= 2 and parts[0] == "derivatives" and parts[1] not in {"labels"}
