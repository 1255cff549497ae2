#!/usr/bin/env python3
"""Reproduce the base models that ship in ``lumbo_bids/data/models``.

Two artifacts, both trained from scratch with the group level's own training code
(:func:`lumbo_bids.training.trainer.train`). The segmentation model is trained on **synthetic
images only**, drawn from label maps (the bundled ``examples/label-maps-spinegeneric``, cord +
CSF masks of 10 subjects, and procedural lumbar phantoms); the real images with manual masks
of a BIDS dataset (the bundled ``examples/ds-spine-mini``; ``sub-sctLumbar`` has none and stays
out: it is the lumbar check) are never trained on, so the Dice of every one of them is a
held-out figure. The localiser is trained on those real images:

* ``cord_seg`` — the deepseg_sc 3D U-Net (SCT's layer structure, ``base_filters`` reduced from
  16 to 8 so that it trains on a 2-core CPU) on 48^3 patches of the per-slice 64x64 crops
  around the manual-mask centerline at 0.5 mm; intensities standardised by the robust
  per-image z-score, patches domain-randomised (contrast, resolution, artefacts:
  :mod:`lumbo_bids.training.augment`), label maps turned into new synthetic images every draw
  (:mod:`lumbo_bids.training.synth`; ``--dorsal-roots 0.5``: half of the lumbar phantoms with
  their nerve roots in a dorsal bundle). The shipped ``cord_seg`` is a seed ensemble: this
  recipe run with ``--seed 42``, ``43`` and ``44``, joined by ``scripts/make_ensemble.py``
  (the mean of the three networks' probabilities; see its docstring).
* ``cord_localiser`` — the deepseg_sc 2D centerline U-Net on 1 mm axial windows of the whole
  field of view, trained with the same domain randomisation to output a Gaussian heat-map
  around the cord (images without a manual mask are localised with it).

``--real-images`` also trains the segmentation model on the real images (the earlier, mixed
recipe: ``--synthetic-fraction`` of the patches synthetic); with ``--loso`` that recipe is run
once more per subject without that subject (never seen, not even to pick the best epoch), and
the held-out Dice of each image goes into the model card. ``--real-images --no-synthetic`` and
``--domain-randomisation 0`` give the ablations.

Usage::

    .venv/bin/python scripts/train_base_model.py --dorsal-roots 0.5 --seed 42 --out work/s42   # ~22 min on 2 CPU cores
    .venv/bin/python scripts/train_base_model.py --dorsal-roots 0.5 --seed 43 --skip-localiser --out work/s43
    .venv/bin/python scripts/train_base_model.py --dorsal-roots 0.5 --seed 44 --skip-localiser --out work/s44
    .venv/bin/python scripts/make_ensemble.py work/s42/cord_seg work/s43/cord_seg work/s44/cord_seg \
        --overlap 0.1 --out work/shipped/cord_seg                  # the shipped cord_seg
    .venv/bin/python scripts/train_base_model.py --real-images --synthetic-fraction 0.8 --loso --skip-localiser --out /tmp/mixed
    .venv/bin/python scripts/train_base_model.py --real-images --no-synthetic --loso --skip-localiser --out /tmp/ablation
    .venv/bin/python scripts/train_base_model.py --no-synthetic --loso-only --skip-localiser --out /tmp/dr_only
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lumbo_bids import __version__, options  # noqa: E402
from lumbo_bids.model.localise import LOCALISER_INTENSITY as INTENSITY  # noqa: E402  (one plan for both models)
from lumbo_bids.model.unet_config import SLICE_CONTEXTS  # noqa: E402
from lumbo_bids.plan import ModelPlan  # noqa: E402
from lumbo_bids.training.localiser_tuning import LOCALISER_PATCH, LOCALISER_RESOLUTION  # noqa: E402

LOGGER = logging.getLogger("lumbo_bids.base_model")
RESOLUTION = 0.5
CROP_SIZE = (64, 64)
PATCH_SIZE = (48, 48, 48)


def masked_images(bids_dir: Path) -> list:
    """Every anatomical image of ``bids_dir`` with a manual mask under derivatives/labels."""
    from lumbo_bids.utils.bids import build_layout, collect_anat, select_subjects

    layout = build_layout(bids_dir)
    found = collect_anat(layout, select_subjects(layout, None), None, {}, bids_dir / "derivatives" / "labels")
    return [anat for items in found.values() for anat in items if anat.mask is not None]


def _around(inside: np.ndarray, arrays, affine: np.ndarray, margin: int):
    """``arrays`` cut to the bounding box of ``inside`` plus ``margin`` voxels in-plane, and its affine."""
    lo = np.maximum(np.argwhere(inside).min(axis=0) - (margin, margin, 0), 0)
    hi = np.minimum(np.argwhere(inside).max(axis=0) + (margin, margin, 0) + 1, inside.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    moved = np.array(affine, dtype=np.float64)
    moved[:3, 3] = affine[:3, :3] @ lo + affine[:3, 3]
    return [a[box] for a in arrays], moved


def label_map_cases(label_dir: Path, out_dir: Path) -> list:
    """Synthetic-image cases of the label maps ``<sub>/anat/<sub>_T2w_{seg,csfseg}-manual.nii.gz``.

    Each pair is reoriented, resampled to 0.5 mm (linear, then thresholded: smooth shapes
    between thick slices), cropped around its cord centerline like a real image, and turned
    into a label map (:func:`lumbo_bids.training.synth.derive_labels`).
    """
    from lumbo_bids.centerline import centerline_from_mask
    from lumbo_bids.geometry import (
        RPI,
        Grid,
        crop_around_centerline,
        crop_box_from_centerline,
        reorient,
        resample_mask_to_grid,
        resampled_grid,
    )
    from lumbo_bids.training.cases import TrainingCase
    from lumbo_bids.training.synth import derive_labels
    from lumbo_bids.utils.images import read_volume

    cases = []
    for cord_path in sorted(label_dir.glob("sub-*/anat/sub-*_T2w_seg-manual.nii.gz")):
        csf_path = cord_path.with_name(cord_path.name.replace("_seg-manual", "_csfseg-manual"))
        if not csf_path.is_file():
            continue
        cord, affine, _ = read_volume(cord_path)
        csf, _, _ = read_volume(csf_path)
        (cord, csf), affine = _around(((cord > 0.5) | (csf > 0.5)), (cord, csf), affine, margin=40)
        masks, rpi_affine = [], None
        for m in (cord, csf):
            data, rpi_affine = reorient((m > 0.5).astype(np.float32), affine, RPI)
            masks.append(data)
        grid = resampled_grid(Grid(tuple(masks[0].shape), rpi_affine), RESOLUTION)
        cord_r, csf_r = (resample_mask_to_grid(m, rpi_affine, grid).astype(bool) for m in masks)
        box = crop_box_from_centerline(centerline_from_mask(cord_r), grid, CROP_SIZE)
        labels = derive_labels(crop_around_centerline(cord_r, box), crop_around_centerline(csf_r, box), RESOLUTION)
        subject = cord_path.name.split("_")[0]
        image, mask = out_dir / f"{subject}_labels.npy", out_dir / f"{subject}_labels_cord.npy"
        np.save(image, labels)
        np.save(mask, (labels == 1).astype(np.uint8))
        cases.append(
            TrainingCase(subject=f"synth-{subject}", name=f"{subject}_synthetic", image=image, mask=mask, synthetic=True)
        )
    return cases


PHANTOM_MODELS = {"tube": "lumbar_phantom", "conus": "conus_phantom"}


def phantom_cases(
    n: int,
    out_dir: Path,
    seed: int,
    dorsal_roots: float = 0.0,
    model: str = "tube",
    roots: tuple[int, int] | None = None,
    dorsal_cord: float = 0.0,
) -> list:
    """``n`` procedural lumbar label maps, 120 mm long crops at 0.5 mm, as synthetic cases.

    ``model``: ``"tube"`` (:func:`lumbo_bids.training.synth.lumbar_phantom`: a tube that tapers to a
    conus among roots, a share ``dorsal_roots`` of them in a dorsal bundle) or ``"conus"``
    (:func:`lumbo_bids.training.synth.conus_phantom`: enlargement, conus taper, filum, roots leaving
    the cord beside the conus; ``dorsal_cord``: the share of its supine phantoms whose cord lies
    dorsally among the roots)."""
    from lumbo_bids.training import synth
    from lumbo_bids.training.cases import TrainingCase

    draw = getattr(synth, PHANTOM_MODELS[model])
    if (roots or dorsal_cord) and model != "conus":
        raise SystemExit(f"--phantom-roots, --dorsal-cord: only the conus phantom takes them (not {model!r})")
    options = {**({"n_roots": roots} if roots else {}), **({"dorsal_cord": dorsal_cord} if dorsal_cord else {})}
    rng = np.random.default_rng([seed, 7])
    cases = []
    for k in range(n):
        labels = draw((*CROP_SIZE, 240), rng, RESOLUTION, dorsal_roots, **options)
        image, mask = out_dir / f"phantom{k:02d}_labels.npy", out_dir / f"phantom{k:02d}_labels_cord.npy"
        np.save(image, labels)
        np.save(mask, (labels == synth.CORD).astype(np.uint8))
        cases.append(
            TrainingCase(subject=f"phantom-{k:02d}", name=f"phantom{k:02d}_synthetic", image=image, mask=mask, synthetic=True)
        )
    return cases


def weigh_phantoms(label_maps: list, phantoms: list, share: float | None) -> list:
    """``phantoms`` weighted so that together they draw ``share`` of the synthetic patches (the
    ``label_maps`` the rest; :attr:`lumbo_bids.training.cases.TrainingCase.weight`), or as they are
    (``None``: every synthetic case alike)."""
    from dataclasses import replace

    if share is None or not phantoms:
        return phantoms
    if not label_maps:
        raise SystemExit("--phantom-share: there are no label maps to share the synthetic patches with")
    weight = share / (1.0 - share) * len(label_maps) / len(phantoms)
    return [replace(case, weight=weight) for case in phantoms]


def localiser_synthetic_cases(label_dir: Path, n_phantoms: int, out_dir: Path, seed: int, dorsal_roots: float) -> list:
    """Synthetic cases for the localiser, on its 1 mm grid: the label maps' whole extent and
    ``n_phantoms`` conus phantoms 96 x 96 x 160 mm (:func:`lumbo_bids.training.synth.conus_phantom`).

    Each window drawn from them is a new image (:func:`lumbo_bids.training.streams.iter_heatmap_slices`);
    the target follows the cord's label only, so the heat-map must end at a phantom's conus tip
    and leave its roots and filum out.
    """
    from lumbo_bids.geometry import RPI, Grid, reorient, resample_mask_to_grid, resampled_grid
    from lumbo_bids.training import synth
    from lumbo_bids.training.cases import TrainingCase
    from lumbo_bids.utils.images import read_volume

    out_dir.mkdir(parents=True, exist_ok=True)
    cases = []

    def add(subject: str, name: str, labels: np.ndarray) -> None:
        image, mask = out_dir / f"{name}_loc_labels.npy", out_dir / f"{name}_loc_labels_cord.npy"
        np.save(image, labels)
        np.save(mask, (labels == synth.CORD).astype(np.uint8))
        cases.append(TrainingCase(subject=subject, name=f"{name}_loc_synthetic", image=image, mask=mask, synthetic=True))

    for cord_path in sorted(label_dir.glob("sub-*/anat/sub-*_T2w_seg-manual.nii.gz")):
        csf_path = cord_path.with_name(cord_path.name.replace("_seg-manual", "_csfseg-manual"))
        if not csf_path.is_file():
            continue
        cord, affine, _ = read_volume(cord_path)
        csf, _, _ = read_volume(csf_path)
        masks, rpi_affine = [], None
        for m in (cord, csf):
            data, rpi_affine = reorient((m > 0.5).astype(np.float32), affine, RPI)
            masks.append(data)
        grid = resampled_grid(Grid(tuple(masks[0].shape), rpi_affine), LOCALISER_RESOLUTION)
        cord_r, csf_r = (resample_mask_to_grid(m, rpi_affine, grid).astype(bool) for m in masks)
        subject = cord_path.name.split("_")[0]
        add(f"synth-{subject}", subject, synth.derive_labels(cord_r, csf_r, LOCALISER_RESOLUTION))
    rng = np.random.default_rng([seed, 11])
    for k in range(n_phantoms):
        labels = synth.conus_phantom((96, 96, 160), rng, LOCALISER_RESOLUTION, dorsal_roots)
        add(f"phantom-{k:02d}", f"phantom{k:02d}", labels)
    return cases


def prepare_case(anat, out_dir: Path):
    """The participant level's preprocessing of one image and its mask, as .npy files.

    Returns the segmentation case (cropped stacks, raw intensities) and the localiser case
    (whole field of view at 1 mm in-plane, normalised as the localiser expects:
    :func:`lumbo_bids.training.localiser_tuning.prepare_localiser_case`, the group level's code).
    """
    from lumbo_bids.preprocess import Preprocessor
    from lumbo_bids.training.finetune import RawCase
    from lumbo_bids.training.localiser_tuning import prepare_localiser_case
    from lumbo_bids.utils.images import read_volume

    data, affine, _ = read_volume(anat.path)
    mask, _, _ = read_volume(anat.mask)
    case = Preprocessor(RESOLUTION, CROP_SIZE).run_case(data, affine, mask)
    seg_image, seg_mask = out_dir / f"{anat.stem}_crop.npy", out_dir / f"{anat.stem}_crop_mask.npy"
    np.save(seg_image, case.stack)
    np.save(seg_mask, case.mask_stack)
    subject = f"sub-{anat.subject}"
    return (
        RawCase(subject, anat.stem, anat.contrast, seg_image, seg_mask),
        prepare_localiser_case(subject, anat.stem, data, affine, mask, LOCALISER_RESOLUTION, out_dir, INTENSITY),
    )


def train_segmentation(train_raw, val_raw, args, run_dir: Path, synthetic=()):
    """One run of the segmentation recipe: (FineTuned with the Dice of ``val_raw``, config, arch).

    The best epoch is chosen on ``val_raw``: pass the training images themselves for a run whose
    held-out images must stay unseen."""
    from lumbo_bids.model.network import build_unet3d
    from lumbo_bids.model.unet_config import UNet3DConfig
    from lumbo_bids.training.finetune import fine_tune
    from lumbo_bids.training.trainer import TrainConfig

    arch = UNet3DConfig(base_filters=args.base_filters, slice_context=args.slice_context, patch_size=PATCH_SIZE)
    cfg = TrainConfig(
        epochs=args.seg_epochs,
        steps_per_epoch=args.seg_steps,
        batch_size=4,
        learning_rate=args.seg_lr,
        lr_schedule="cosine",
        loss="dice_bce",
        early_stopping_patience=0,
        seed=args.seed,
        cord_fraction=0.8,
        augmentation_strength=1.0,
        domain_randomisation=args.domain_randomisation,
        thick_axes=args.thick_axes,
        grey_matter=args.grey_matter,
        end_fraction=args.end_fraction,
        cldice_weight=args.cldice_weight,
        slice_dice_weight=args.slice_dice_weight,
        synthetic_fraction=None if args.synthetic_only else args.synthetic_fraction,
        patch_size=PATCH_SIZE,
        val_patches_per_case=4,
    )
    model_fn = lambda: build_unet3d(arch)  # noqa: E731
    if args.init_model is not None:
        model_fn = _initialised(model_fn, args.init_model, args.init_member)
    if args.teacher is not None:  # the student learns the teacher's probability (training.distil)
        from lumbo_bids.model.artifact import load_artifact
        from lumbo_bids.training.distil import distilled

        model_fn = distilled(
            model_fn, load_artifact(args.teacher).build_model, args.distil_weight, args.distil_through_only,
            clean_view=args.teacher_view == "clean", full_width=args.distil_full_width,
        )  # fmt: skip
    tuned = fine_tune(
        model_fn, train_raw, val_raw, cfg, run_dir / "data", run_dir / "training",
        intensity=INTENSITY, synthetic_cases=tuple(synthetic), progress=args.progress,
    )  # fmt: skip
    return tuned, cfg, arch


def _initialised(build, init_model: Path, member: int):
    """``build`` with the weights of ``init_model`` (a segmentation artifact of the same network,
    or member ``member`` of an ensemble of them): training continues from that network."""
    from lumbo_bids.model.artifact import load_artifact
    from lumbo_bids.model.network import members_of

    source = load_artifact(init_model).build_model()
    members = members_of(source)
    if not 0 <= member < len(members):
        raise SystemExit(f"--init-member {member}: {init_model} has {len(members)} network(s)")

    def model_fn():
        model = build()
        model.set_weights(members[member].get_weights())
        return model

    return model_fn


def init_model_card(init_model: Path, member: int) -> dict:
    """What the model card says of the network training started from: its name, checksum, member
    and that member's own card (command, seed, data), so the chain stays reproducible."""
    from lumbo_bids.model.artifact import load_artifact

    source = load_artifact(init_model)
    training = source.manifest.get("training") or {}
    members = training.get("members") or [training]
    return {
        "name": source.manifest.get("name"),
        "version": source.manifest.get("version"),
        "sha256": source.checksum,
        "member": member,
        "card": members[member] if member < len(members) else training,
    }


def teacher_card(
    teacher: Path, weight: float, through_only: bool = False, clean_view: bool = False, full_width: float = 0.0
) -> dict:
    """What the model card says of a distillation teacher: its name, checksum, members and weight."""
    from lumbo_bids.model.artifact import load_artifact

    source = load_artifact(teacher)
    members = (source.manifest.get("training") or {}).get("members") or []
    return {
        "name": source.manifest.get("name"),
        "path": str(teacher),
        "sha256": source.checksum,
        "members": [{"seed": m.get("seed"), "checksum": m.get("checksum")} for m in members],
        "distil_weight": weight,
        "target": "(1 - distil_weight) * label + distil_weight * teacher probability (lumbo_bids.training.distil)",
        **({"through_only": "the teacher only on patches the labelled cord crosses along z"} if through_only else {}),
        **(
            {"full_width": f"and only where no labelled slice is below {full_width:g} of the widest one's area (no taper)"}
            if full_width
            else {}
        ),
        **({"view": "clean: the patch before contrast, resolution and artefacts (augment.augment_pair)"} if clean_view else {}),
    }


def evaluate(tuned, cases, cfg) -> dict:
    """Dice of each case, segmented as the participant level does (plan, prediction, post-processing)."""
    from lumbo_bids.training.finetune import evaluate_cases

    return evaluate_cases(tuned.result.model, cases, ModelPlan(cfg.patch_size, intensity=tuned.intensity))


def leave_one_subject_out(raw, subjects, args, synthetic) -> dict:
    """Dice of every real image, segmented by the recipe trained (and its epoch chosen) without its subject."""
    loso = {}
    for held_out in subjects:
        train_raw = [c for c in raw if c.subject != held_out]
        fold, cfg, _ = train_segmentation(train_raw, train_raw, args, args.work / f"loso_{held_out}", synthetic)
        scores = evaluate(fold, [c for c in raw if c.subject == held_out], cfg)
        LOGGER.info("leave-%s-out Dice: %s", held_out, json.dumps({k: round(v, 3) for k, v in scores.items()}))
        loso.update(scores)
    return loso


def _validation_card(args, raw, subjects, dice: dict, loso: dict) -> dict:
    """The model card's account of how the Dice figures were obtained."""
    if args.synthetic_only:
        return {
            "validation": (
                "trained on synthetic images only, best epoch chosen on synthetic images: no real image was "
                f"seen, so held_out_dice (the {len(raw)} masked real images of {len(subjects)} subjects, "
                "segmented as the participant level does) is a held-out figure for every one of them"
            ),
            "held_out_dice": dice,
        }
    return {
        "caveat": (
            f"trained on only {len(raw)} images of {len(subjects)} subjects; the in-sample Dice is "
            "optimistic, the leave-one-subject-out Dice is the figure to expect on new data"
        ),
        "validation": (
            "best epoch chosen on the training images; leave_one_subject_out_dice: each subject's images "
            "scored by a model trained (and its epoch chosen) without that subject"
        ),
        "in_sample_dice": dice,
        "leave_one_subject_out_dice": loso or "not run (--loso)",
    }


def train_localiser(cases, args, run_dir: Path, synthetic=()):
    """The localiser recipe on ``cases`` (real) and ``synthetic`` (the best epoch on the real
    ones; on the synthetic ones when there is no real case)."""
    from lumbo_bids.model.network import build_unet2d
    from lumbo_bids.model.unet_config import UNet2DConfig
    from lumbo_bids.training.localiser_tuning import localiser_train_config
    from lumbo_bids.training.trainer import train

    arch = UNet2DConfig(base_filters=8, depth=2, dilation_layers=2, patch_size=LOCALISER_PATCH)
    cfg = localiser_train_config(
        args.loc_epochs,
        args.loc_steps,
        seed=args.seed,
        domain_randomisation=args.domain_randomisation,
        patch_size=LOCALISER_PATCH,
        thick_axes=args.thick_axes,
    )
    val = list(cases) or list(synthetic)
    result = train(lambda: build_unet2d(arch), [*cases, *synthetic], val, cfg, run_dir / "training", progress=args.progress)
    return result, cfg, arch


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bids", type=Path, default=REPO / "examples" / "ds-spine-mini")
    parser.add_argument("--out", type=Path, default=REPO / "lumbo_bids" / "data" / "models")
    parser.add_argument("--work", type=Path, default=REPO / "work" / "base_model")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--base-filters", type=int, default=8)
    parser.add_argument(
        "--slice-context", choices=SLICE_CONTEXTS, default="3d",
        help="segmentation kernels across slices (lumbo_bids.model.unet_config.UNet3DConfig)",
    )  # fmt: skip
    parser.add_argument(
        "--init-model", type=Path, default=None,
        help="start the segmentation network from this artifact's weights (same network; an ensemble: --init-member)",
    )  # fmt: skip
    parser.add_argument("--init-member", type=int, default=0, help="which member of an --init-model ensemble")
    parser.add_argument(
        "--teacher", type=Path, default=None,
        help="distil: train the network towards this artifact's probability too (an ensemble; lumbo_bids.training.distil)",
    )  # fmt: skip
    parser.add_argument(
        "--distil-weight", type=float, default=0.5,
        help="share of the --teacher's probability in the training target (the rest is the label)",
    )  # fmt: skip
    parser.add_argument(
        "--distil-through-only", action="store_true",
        help="the --teacher only on patches that the labelled cord crosses along z; where it ends or is absent, the label",
    )  # fmt: skip
    parser.add_argument(
        "--distil-full-width", type=float, default=0.0,
        help="with --distil-through-only: the teacher only on patches whose thinnest labelled slice keeps this share of "
        "the widest one's area (0.5: not where the conus tapers)",
    )  # fmt: skip
    parser.add_argument(
        "--teacher-view", choices=("augmented", "clean"), default="augmented",
        help="what the --teacher sees: the student's augmented patch, or the clean patch (spatial augmentation only: "
        "no contrast, thick slices, artefacts or noise; lumbo_bids.training.distil)",
    )  # fmt: skip
    parser.add_argument("--seg-lr", type=float, default=1e-3, help="segmentation learning rate (cosine schedule from it)")
    parser.add_argument("--seg-epochs", type=int, default=30)
    parser.add_argument("--seg-steps", type=int, default=25)
    parser.add_argument("--loc-epochs", type=int, default=20)
    parser.add_argument("--loc-steps", type=int, default=40)
    parser.add_argument(
        "--loc-synthetic", choices=("none", "mixed", "only"), default="none",
        help="localiser: also ('mixed') or only ('only') on synthetic images of the label maps and conus phantoms at 1 mm",
    )  # fmt: skip
    parser.add_argument("--loc-phantoms", type=int, default=20, help="conus phantoms for the localiser (--loc-synthetic)")
    parser.add_argument("--label-maps", type=Path, default=REPO / "examples" / "label-maps-spinegeneric")
    parser.add_argument("--phantoms", type=int, default=10, help="procedural lumbar label maps (conus, cauda equina)")
    parser.add_argument(
        "--phantom-share", type=float, default=None,
        help="share of the synthetic patches drawn from the --phantoms (the label maps the rest; default: every case alike)",
    )  # fmt: skip
    parser.add_argument(
        "--dorsal-roots", type=float, default=0.0,
        help="share of the phantoms whose nerve roots lie in one dorsal bundle (supine patients)",
    )  # fmt: skip
    parser.add_argument(
        "--dorsal-cord", type=float, default=0.0,
        help="share of those supine conus phantoms whose cord lies dorsally among the roots too (synth.conus_phantom)",
    )  # fmt: skip
    parser.add_argument(
        "--phantom-model", choices=sorted(PHANTOM_MODELS), default="tube",
        help="lumbar phantoms: 'tube' (the recipe until 2026-12) or 'conus' (enlargement, conus taper, filum, roots beside it)",
    )  # fmt: skip
    parser.add_argument(
        "--thick-axes", choices=options.CHOICES["thick_axes"], default="axial",
        help="simulated thick slices along the cord axis only, or also sagittal and coronal (augment.THICK_AXES)",
    )  # fmt: skip
    parser.add_argument(
        "--grey-matter", type=float, default=0.0,
        help="probability of a grey-matter core of its own intensity in a synthetic cord (synth.synthesise)",
    )  # fmt: skip
    parser.add_argument(
        "--phantom-roots", type=int, nargs=2, metavar=("MIN", "MAX"), default=None,
        help="number of nerve roots of a conus phantom (default: synth.conus_phantom's 12-40)",
    )  # fmt: skip
    parser.add_argument(
        "--end-fraction", type=float, default=0.0,
        help="share of a phantom's cord patches centred around its cord's ends (patches.sample_patch_centres)",
    )  # fmt: skip
    parser.add_argument(
        "--cldice-weight", type=float, default=0.0,
        help="add this times clDice (the skeletons' overlap: a missed thin conus tip costs by its length) to Dice + BCE",
    )  # fmt: skip
    parser.add_argument(
        "--slice-dice-weight", type=float, default=0.0,
        help="add this times the slice-wise Dice (every axial slice counts alike: the thin conus as the enlargement)",
    )  # fmt: skip
    parser.add_argument("--real-images", action="store_true", help="also train the segmentation on the real images")
    parser.add_argument("--synthetic-fraction", type=float, default=0.4, help="share of synthetic patches (--real-images)")
    parser.add_argument("--no-synthetic", action="store_true", help="train on the real images only (implies --real-images)")
    parser.add_argument("--domain-randomisation", type=float, default=1.0, help="0 switches it off (ablation)")
    parser.add_argument("--loso", action="store_true", help="also run leave-one-subject-out evaluation")
    parser.add_argument(
        "--loso-only", action="store_true",
        help="only the leave-one-subject-out runs (no model written): OUT/loso_dice.json",
    )  # fmt: skip
    parser.add_argument("--skip-localiser", action="store_true")
    parser.add_argument("--skip-segmentation", action="store_true")
    parser.add_argument("--progress", action="store_true", help="Keras progress bars")
    args = parser.parse_args(argv)
    args.synthetic_only = not (args.real_images or args.no_synthetic)
    if args.loso_only and args.synthetic_only:
        parser.error("--loso-only needs --real-images or --no-synthetic (a synthetic-only run holds out every real image)")
    if not 0.0 <= args.distil_weight <= 1.0:
        parser.error(f"--distil-weight must be in [0, 1], got {args.distil_weight}")
    if args.distil_full_width and not (args.distil_through_only and 0.0 < args.distil_full_width <= 1.0):
        parser.error(f"--distil-full-width must be in (0, 1] and needs --distil-through-only, got {args.distil_full_width}")
    if args.phantom_share is not None and not 0.0 < args.phantom_share < 1.0:
        parser.error(f"--phantom-share must be in (0, 1), got {args.phantom_share}")
    if args.teacher_view == "clean" and args.teacher is None:
        parser.error("--teacher-view clean needs a --teacher")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")

    from lumbo_bids.model.artifact import save_artifact
    from lumbo_bids.training.finetune import model_card

    anats = masked_images(args.bids)
    data_dir = args.work / "cases"
    data_dir.mkdir(parents=True, exist_ok=True)
    LOGGER.info("preparing %d image(s) with manual masks from %s", len(anats), args.bids)
    pairs = [prepare_case(anat, data_dir) for anat in anats]
    raw = [p[0] for p in pairs]
    loc_cases = [p[1] for p in pairs]
    subjects = sorted({c.subject for c in raw})
    dataset = {
        "bids_dir": args.bids.name,
        "images": [c.name for c in raw],
        "subjects": subjects,
        "licence": "MIT/CC0 sources (see the dataset README)",
    }

    if not args.skip_localiser:
        started = time.time()
        loc_synthetic = (
            []
            if args.loc_synthetic == "none"
            else localiser_synthetic_cases(
                args.label_maps, args.loc_phantoms, data_dir / "localiser", args.seed, args.dorsal_roots
            )
        )
        loc_real = [] if args.loc_synthetic == "only" else loc_cases
        result, cfg, arch = train_localiser(loc_real, args, args.work / "localiser", loc_synthetic)
        loc_validation = (
            "held-out: trained on synthetic images only, the best epoch on synthetic windows; every real image is unseen"
            if not loc_real
            else "in-sample only (the training images): too few subjects to hold any out"
        )
        loc_dataset = {
            **dataset,
            "images": [c.name for c in loc_real],
            "synthetic": {
                "label_maps": sum(c.subject.startswith("synth-") for c in loc_synthetic),
                "conus_phantoms": sum(c.subject.startswith("phantom-") for c in loc_synthetic),
                "dorsal_roots": args.dorsal_roots,
                "generator": "scripts/train_base_model.py localiser_synthetic_cases",
            },
        }
        manifest = {
            "name": "lumbo_bids-cord-localiser",
            "version": __version__,
            "architecture": {"name": "unet2d", "config": arch.to_dict()},
            "task": "localisation",
            "contrasts": sorted({c.contrast for c in raw}),
            **ModelPlan(LOCALISER_PATCH, LOCALISER_RESOLUTION, None, INTENSITY, overlap=0.0, blend="uniform").sections(),
            "training": model_card(
                purpose="cord localisation (heat-map of the centerline on axial slices) for images without a manual mask",
                dataset=loc_dataset,
                validation=loc_validation,
                seed=args.seed,
                hyperparameters=cfg.to_dict(),
                epochs_run=result.epochs_run,
                best_val_dice=result.best_val_dice,
                seconds=round(time.time() - started, 1),
                reproduce=" ".join(["scripts/train_base_model.py", *(sys.argv[1:] if argv is None else argv)]),
            ),
        }
        LOGGER.info("localiser: best validation heat-map Dice %.3f", result.best_val_dice)
        save_artifact(result.model, args.out / "cord_localiser", manifest)

    if args.skip_segmentation:
        return 0
    synthetic = [] if args.no_synthetic else label_map_cases(args.label_maps, data_dir)
    LOGGER.info("%d label map(s) for synthetic images from %s", len(synthetic), args.label_maps)
    dataset["synthetic_label_maps"] = {
        "dir": args.label_maps.name,
        "cases": [c.name for c in synthetic],
        "licence": "MIT (spine-generic)",
    }
    phantoms = (
        []
        if args.no_synthetic
        else phantom_cases(
            args.phantoms, data_dir, args.seed, args.dorsal_roots, args.phantom_model, args.phantom_roots, args.dorsal_cord
        )
    )
    dataset["synthetic_phantoms"] = {
        "count": len(phantoms),
        "generator": f"lumbo_bids.training.synth.{PHANTOM_MODELS[args.phantom_model]}",
        "dorsal_roots": args.dorsal_roots,
        "dorsal_cord": args.dorsal_cord,
        "share_of_synthetic_patches": args.phantom_share,
        "seed": args.seed,
    }
    synthetic += weigh_phantoms(synthetic, phantoms, args.phantom_share)
    reproduce = " ".join(["scripts/train_base_model.py", *(sys.argv[1:] if argv is None else argv)])
    if args.loso_only:
        loso = leave_one_subject_out(raw, subjects, args, synthetic)
        args.out.mkdir(parents=True, exist_ok=True)
        record = {"reproduce": reproduce, "seed": args.seed, "dice": loso}
        (args.out / "loso_dice.json").write_text(json.dumps(record, indent=1))
        LOGGER.info("wrote %s", args.out / "loso_dice.json")
        return 0
    real = [] if args.synthetic_only else raw
    started = time.time()
    tuned, cfg, arch = train_segmentation(real, real, args, args.work / "segmentation", synthetic)
    # every real image (fine_tune scored them already, unless it saw none: synthetic only)
    in_sample = tuned.validation_dice if real else evaluate(tuned, raw, cfg)
    kind = "in-sample" if real else "held-out (no real image trained on)"
    LOGGER.info("segmentation: %s Dice %s", kind, json.dumps({k: round(v, 3) for k, v in in_sample.items()}))
    seconds = round(time.time() - started, 1)
    loso = leave_one_subject_out(raw, subjects, args, synthetic) if args.loso and not args.synthetic_only else {}
    clean = args.teacher_view == "clean"
    manifest = {
        "name": "lumbo_bids-cord-seg",
        "version": __version__,
        "architecture": {"name": "unet3d", "config": arch.to_dict()},
        "task": "segmentation",
        "contrasts": ["T1w", "T2w", "T2starw"],
        **ModelPlan(
            PATCH_SIZE, RESOLUTION, CROP_SIZE, tuned.intensity
        ).sections(),  # the default inference: what evaluate() scored with
        "training": model_card(
            purpose="base cord segmentation model, to be fine-tuned on your own data with the group level",
            dataset=dataset,
            **_validation_card(args, raw, subjects, in_sample, loso),
            ablation={
                "synthetic": not args.no_synthetic,
                "synthetic_only": args.synthetic_only,
                "domain_randomisation": args.domain_randomisation,
                "phantoms": len(phantoms),
                "phantom_model": args.phantom_model,
                "thick_axes": args.thick_axes,
                "grey_matter": args.grey_matter,
                "end_fraction": args.end_fraction,
                "cldice_weight": args.cldice_weight,
                "slice_dice_weight": args.slice_dice_weight,
                "phantom_roots": args.phantom_roots,
                "dorsal_cord": args.dorsal_cord,
                "phantom_share": args.phantom_share,
            },  # fmt: skip
            **({"init_model": init_model_card(args.init_model, args.init_member)} if args.init_model else {}),
            **(
                {
                    "teacher": teacher_card(
                        args.teacher, args.distil_weight, args.distil_through_only, clean, args.distil_full_width
                    )
                }
                if args.teacher
                else {}
            ),
            seed=args.seed,
            hyperparameters=cfg.to_dict(),
            epochs_run=tuned.result.epochs_run,
            seconds=seconds,
            reproduce=reproduce,
        ),
    }
    save_artifact(tuned.result.model, args.out / "cord_seg", manifest)
    LOGGER.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
