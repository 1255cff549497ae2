#!/usr/bin/env python3
"""Write a BIDS dataset whose images are re-acquired as thick slices (``lumbo_bids.reacquire``).

Every anatomical image of ``BIDS_DIR`` (and its manual mask under ``derivatives/labels``, if
any) becomes a ``--plane`` acquisition of ``--thickness`` mm slices (box profile, contiguous),
``--inplane`` mm in-plane, on its own grid with a correct affine, under ``OUT_DIR`` with the same
BIDS names: a sagittal 3 mm version of the bundled lumbar T2w, the way lumbar T2w TSE is acquired
in the clinic, for ``lumbo-bids OUT_DIR ... participant``. ``--fov BOTTOM LENGTH`` first keeps
the axial slices from BOTTOM to BOTTOM + LENGTH mm above the lowest one (a smaller head-foot field
of view, ``lumbo_bids.reacquire.field_of_view``). ``BIDS_DIR`` is only read.

Usage::

    .venv/bin/python scripts/reacquire.py examples/ds-spine-mini work/ds-sagittal3mm --plane sagittal --thickness 3
    .venv/bin/python scripts/reacquire.py examples/ds-spine-mini work/ds-fov50 --participant-label sctLumbar \
        --fov 50 78 --thickness 1.5 --inplane 1.5
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LOGGER = logging.getLogger("lumbo_bids.reacquire")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bids_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--plane", choices=("sagittal", "coronal", "axial"), default="sagittal")
    parser.add_argument("--thickness", type=float, default=3.0, help="slice thickness, mm")
    parser.add_argument("--inplane", type=float, default=None, help="in-plane voxel size, mm (default: the finest native)")
    parser.add_argument("--participant-label", nargs="*", default=None)
    parser.add_argument("--fov", type=float, nargs=2, metavar=("BOTTOM", "LENGTH"), help="keep this head-foot stretch (mm) first")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")

    from lumbo_bids.reacquire import field_of_view, reacquire, reacquire_mask
    from lumbo_bids.utils.bids import build_layout, collect_anat, select_subjects
    from lumbo_bids.utils.images import read_volume, save_image

    bids_dir, out = args.bids_dir.resolve(), args.out_dir.resolve()
    if out == bids_dir or bids_dir in out.parents:
        parser.error(f"{out}: the output must lie outside {bids_dir}")
    labels = bids_dir / "derivatives" / "labels"
    layout = build_layout(bids_dir)
    found = collect_anat(layout, select_subjects(layout, args.participant_label), None, {}, labels)
    out.mkdir(parents=True, exist_ok=True)
    description = json.loads((bids_dir / "dataset_description.json").read_text())
    description["Name"] = f"{description.get('Name', bids_dir.name)} re-acquired as {args.thickness:g} mm {args.plane} slices"
    (out / "dataset_description.json").write_text(json.dumps(description, indent=2) + "\n")
    for name in ("participants.tsv", "participants.json", "README"):
        if (bids_dir / name).is_file():
            shutil.copyfile(bids_dir / name, out / name)
    label_desc = labels / "dataset_description.json"
    if label_desc.is_file():
        (out / "derivatives" / "labels").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(label_desc, out / "derivatives" / "labels" / "dataset_description.json")
    for items in found.values():
        for anat in items:
            data, affine, _ = read_volume(anat.path)
            source_affine = affine
            if args.fov:
                try:
                    data, affine = field_of_view(data, affine, *args.fov)
                except ValueError as error:  # a --fov outside this image: one line, exit status 2
                    parser.error(f"{anat.path}: --fov {error}")
            thick, thick_affine = reacquire(data, affine, args.plane, args.thickness, args.inplane)
            target = out / anat.path.relative_to(bids_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            save_image(thick, thick_affine, target, dtype="float32")
            sidecar = anat.path.with_name(anat.path.name.replace(".nii.gz", ".json"))
            meta = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
            meta["SliceThickness"] = args.thickness
            meta["ReacquiredFrom"] = str(anat.path.relative_to(bids_dir))
            if args.fov:
                meta["ReacquiredFieldOfViewMm"] = list(args.fov)
            target.with_name(target.name.replace(".nii.gz", ".json")).write_text(json.dumps(meta, indent=2) + "\n")
            LOGGER.info(
                "%s: %s -> %s voxels %s mm",
                anat.stem,
                data.shape,
                thick.shape,
                [round(float(v), 2) for v in thick_affine[:3, :3].diagonal()],
            )
            if anat.mask is not None:
                mask, _, _ = read_volume(anat.mask)
                if args.fov:
                    mask, _ = field_of_view(mask, source_affine, *args.fov)
                thick_mask, _ = reacquire_mask(mask, affine, args.plane, args.thickness, args.inplane)
                mask_target = out / "derivatives" / "labels" / anat.mask.relative_to(labels)
                mask_target.parent.mkdir(parents=True, exist_ok=True)
                save_image(thick_mask, thick_affine, mask_target, dtype="uint8")
    LOGGER.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
