"""Command-line parser (argparse only: flags, types, help; no work).

Follows the BIDS Apps convention (``BIDS_DIR OUTPUT_DIR LEVEL``) and the habits of
fMRIPrep/MRIQC: both dash and underscore spellings of the classic flags are accepted.
"""

from __future__ import annotations

import argparse
import os
import sys

from .. import __version__, options
from ..errors import ExitCode
from .arg_types import (
    LOSSES,
    fraction,
    label,
    memory_gb,
    non_negative_int,
    overlap,
    path,
    positive_float,
    positive_int,
    unit,
)

DEFAULT_CONTRASTS = ("T2w", "T1w", "T2starw")


class BIDSAppArgumentParser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors exit with BEP027's 64 (EX_USAGE), not argparse's 2, and
    which keeps every argument it is given, in order, in :attr:`arguments` (what ``add_argument``
    returns, on the parser or on one of its groups: argparse's public API), for the Boutiques
    descriptor and the check of which options were typed."""

    def __init__(self, *args, **kwargs):
        self.arguments: list[tuple[str | None, argparse.Action]] = []  # (group title, action)
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        self.arguments.append((None, action))
        return action

    def add_argument_group(self, *args, **kwargs):
        group = super().add_argument_group(*args, **kwargs)
        add = group.add_argument

        def recorded(*a, **k) -> argparse.Action:
            action = add(*a, **k)
            self.arguments.append((group.title, action))
            return action

        group.add_argument = recorded
        return group

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(int(ExitCode.USAGE), f"{self.prog}: error: {message}\n")


class _DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Append ``(default: X)`` only where the help does not already say it and X means something."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "(default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


class _ExecSpecAction(argparse.Action):
    """``--bids-exec-spec``: print the Boutiques descriptor and exit 0 (as ``--version`` does)."""

    def __init__(self, option_strings, dest, help=None):
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        import json

        from .boutiques import descriptor

        print(json.dumps(descriptor(parser), indent=2))
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """Build the ``run.py``/``lumbo-bids`` argument parser."""
    parser = BIDSAppArgumentParser(
        prog="lumbo-bids",
        description=(
            "lumbo_bids: spinal cord segmentation built for the lumbosacral cord and the "
            "conus medullaris (a BIDS App). 'participant' segments each selected image and "
            "writes BIDS derivatives; 'group' fine-tunes the model on all subjects that have "
            "manual cord masks."
        ),
        formatter_class=_DefaultsHelpFormatter,
    )
    parser.add_argument("bids_dir", type=path, help="the root folder of a BIDS dataset (read only)")
    parser.add_argument(
        "output_dir",
        type=path,
        help="where derivatives are written (e.g. BIDS_DIR/../derivatives/lumbo_bids; never inside BIDS_DIR)",
    )
    parser.add_argument(
        "analysis_level",
        metavar="analysis_level",
        help="'participant' (segment each subject) or 'group' (fine-tune the model across subjects)",
    )
    parser.add_argument("--version", action="version", version=f"lumbo_bids v{__version__}")
    parser.add_argument(
        "--bids-exec-spec",
        action=_ExecSpecAction,
        help="print the app's Boutiques descriptor (JSON: every option, the container, the exit codes) and exit",
    )

    g_bids = parser.add_argument_group("Options for filtering the BIDS queries")
    g_bids.add_argument(
        "--participant-label",
        "--participant_label",
        dest="participant_label",
        nargs="+",
        type=label,
        metavar="LABEL",
        help="one or more participant labels, with or without 'sub-' (default: all subjects)",
    )
    g_bids.add_argument(
        "--session-label",
        "--session_label",
        dest="session_label",
        nargs="+",
        metavar="LABEL",
        type=lambda v: v.removeprefix("ses-"),
        help="restrict to these sessions, with or without 'ses-'",
    )
    g_bids.add_argument(
        "--bids-filter-file",
        "--bids_filter_file",
        dest="bids_filter_file",
        type=path,
        metavar="FILE",
        help=(
            'JSON file of pybids queries per input, e.g. {"anat": {"suffix": ["T2w"]}} '
            f"(default: suffix in {', '.join(DEFAULT_CONTRASTS)})"
        ),
    )
    g_bids.add_argument(
        "--skip-bids-validation",
        "--skip_bids_validation",
        "--skip_bids_validator",
        dest="skip_bids_validation",
        action="store_true",
        help="do not run bids-validator-deno on the input dataset",
    )
    g_bids.add_argument(
        "--bids-database-dir",
        dest="bids_database_dir",
        type=path,
        metavar="DIR",
        help="persist (or reuse) the pybids index in this folder",
    )
    g_bids.add_argument(
        "--labels-dir",
        dest="labels_dir",
        type=path,
        metavar="DIR",
        help=(
            "where manual cord masks live (default: BIDS_DIR/derivatives/labels; "
            "sub-XX[/ses-YY]/anat/<source>label-SC_seg.nii.gz or <source>_seg-manual.nii.gz)"
        ),
    )

    g_perf = parser.add_argument_group("Options to handle performance")
    g_perf.add_argument(
        "--nprocs",
        "--n_cpus",
        "--n-cpus",
        dest="nprocs",
        type=positive_int,
        help="maximum number of processes (default: all CPUs)",
    )
    g_perf.add_argument(
        "--omp-nthreads", dest="omp_nthreads", type=positive_int, help="maximum threads per process (default: nprocs)"
    )
    g_perf.add_argument(
        "--mem",
        "--mem-gb",
        "--mem_gb",
        dest="mem_gb",
        type=memory_gb,
        metavar="GB",
        help="memory limit for the workflow, e.g. 8G",
    )

    g_model = parser.add_argument_group("Segmentation model")
    g_model.add_argument(
        "--model",
        type=path,
        metavar="PATH",
        help="model artifact (folder or archive) to segment with (default: the shipped base model)",
    )
    g_model.add_argument(
        "--sct-models",
        dest="sct_models",
        type=path,
        metavar="DIR",
        help="folder with SCT deepseg_sc Keras-2 HDF5 models (e.g. t2_ctr.h5); its centerline models then localise the cord",
    )
    g_model.add_argument(
        "--resolution",
        type=positive_float,
        default=None,
        metavar="MM",
        help="isotropic working resolution in mm (default: the model's, 0.5)",
    )
    g_model.add_argument(
        "--crop-size",
        dest="crop_size",
        type=positive_int,
        nargs=2,
        default=None,
        metavar=("X", "Y"),
        help="in-plane box around the centerline, in voxels (default: the model's, 64 64)",
    )
    g_model.add_argument("--threshold", type=fraction, default=None, help="probability threshold (default: the model's, 0.5)")
    g_model.add_argument("--overlap", type=overlap, default=None, help="sliding-window overlap in [0, 1) (default: the model's)")
    g_model.add_argument("--tta", action="store_true", help="test-time flip augmentation")
    g_model.add_argument(
        "--save-probseg", dest="save_probseg", action="store_true", help="also write the soft probability map (_probseg)"
    )
    g_model.add_argument(
        "--ignore-manual-centerline",
        dest="ignore_manual_centerline",
        action="store_true",
        help="find the centerline automatically even when a manual mask exists",
    )

    g_group = parser.add_argument_group("Group level (fine-tuning)")
    g_group.add_argument(
        "--init-model",
        dest="init_model",
        type=path,
        metavar="PATH",
        help="model to start from (default: the shipped base model)",
    )
    g_group.add_argument(
        "--from-scratch", dest="from_scratch", action="store_true", help="random initialisation instead of --init-model"
    )
    g_group.add_argument("--epochs", type=positive_int, default=options.EPOCHS, help="training epochs")
    g_group.add_argument(
        "--steps-per-epoch", dest="steps_per_epoch", type=positive_int, default=options.STEPS_PER_EPOCH, help="batches per epoch"
    )
    g_group.add_argument(
        "--batch-size", dest="batch_size", type=positive_int, default=options.BATCH_SIZE, help="patches per batch"
    )
    g_group.add_argument(
        "--learning-rate", dest="learning_rate", type=positive_float, default=options.LEARNING_RATE, help="Adam learning rate"
    )
    g_group.add_argument("--loss", choices=LOSSES, default=options.LOSS, help="training loss")
    g_group.add_argument("--freeze-encoder", dest="freeze_encoder", action="store_true", help="train the decoder only")
    g_group.add_argument("--patience", type=positive_int, default=options.PATIENCE, help="early-stopping patience (epochs)")
    g_group.add_argument(
        "--validation-fraction",
        dest="validation_fraction",
        type=fraction,
        default=options.VALIDATION_FRACTION,
        help="fraction of subjects held out",
    )
    g_group.add_argument(
        "--validation-subjects",
        dest="validation_subjects",
        nargs="+",
        type=label,
        metavar="LABEL",
        help="explicit validation subjects",
    )
    g_group.add_argument(
        "--augmentation", type=unit, default=options.AUGMENTATION, metavar="STRENGTH", help="augmentation strength in [0, 1]"
    )
    g_group.add_argument("--resume", action="store_true", help="resume an interrupted fine-tuning from its checkpoints")
    g_group.add_argument(
        "--config-file",
        dest="config_file",
        type=path,
        metavar="JSON",
        help="fine-tuning settings (e.g. a search's best_config.json); options given on the command line win",
    )
    g_group.add_argument(
        "--search",
        type=path,
        metavar="SPEC.json",
        help="parameter search with subject-wise k-fold cross-validation instead of one fine-tuning",
    )
    g_group.add_argument(
        "--qc-ratings",
        dest="qc_ratings",
        type=path,
        metavar="FILE",
        help="ratings TSV exported from the study QC page (OUTPUT_DIR/qc/index.html): images rated 'fail' are left out of "
        "fine-tuning; images without a manual mask rated 'pass' are trained on with their automatic mask from OUTPUT_DIR",
    )
    g_group.add_argument(
        "--no-accepted-masks",
        dest="accepted_masks",
        action="store_false",
        help="train on manual masks only: automatic masks rated 'pass' in --qc-ratings are not used as labels",
    )
    g_group.add_argument(
        "--ray-address",
        dest="ray_address",
        metavar="ADDR",
        help="run --search trials on this Ray cluster through Ray Tune (needs the 'ray' extra; 'local' starts one here)",
    )

    g_group.add_argument(
        "--no-localiser-finetune",
        dest="localiser_finetune",
        action="store_false",
        help="fine-tune the segmentation network only (by default the cord localiser is fine-tuned too, on the masks' centerlines)",
    )
    g_group.add_argument(
        "--keep-worse-localiser",
        dest="keep_worse_localiser",
        action="store_true",
        help="ship the fine-tuned localiser even when its validation centerline is worse than the shipped one's "
        "(by default the shipped localiser is kept then)",
    )
    g_group.add_argument(
        "--localiser-epochs",
        dest="localiser_epochs",
        type=positive_int,
        default=options.LOCALISER_EPOCHS,
        help="localiser fine-tuning epochs",
    )
    g_group.add_argument(
        "--localiser-steps",
        dest="localiser_steps",
        type=positive_int,
        default=options.LOCALISER_STEPS_PER_EPOCH,
        help="localiser batches (16 axial windows) per epoch",
    )
    g_group.add_argument(
        "--learning-curve",
        dest="learning_curve",
        action="store_true",
        help="fine-tune on 1, 2, 4, ... of the training subjects and plot the validation Dice against their number "
        "(group/learning_curve.tsv and .png; no model is written)",
    )

    g_other = parser.add_argument_group("Other options")
    g_other.add_argument(
        "-w",
        "--work-dir",
        dest="work_dir",
        type=path,
        default=os.environ.get("LUMBO_BIDS_WORK_DIR", "work"),
        help="working directory, the cache (default: $LUMBO_BIDS_WORK_DIR or ./work)",
    )
    g_other.add_argument(
        "--clean-workdir", dest="clean_workdir", action="store_true", help="delete this version's work folder before running"
    )
    g_other.add_argument(
        "--stop-on-first-crash", dest="stop_on_first_crash", action="store_true", help="abort on the first failing node"
    )
    g_other.add_argument(
        "--random-seed", dest="random_seed", type=non_negative_int, default=42, help="seed for every random generator"
    )
    g_other.add_argument("-v", "--verbose", dest="verbose_count", action="count", default=0, help="more output (-v, -vv)")
    return parser
