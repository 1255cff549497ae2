"""Thin Nipype interfaces over :mod:`lumbo_bids.morphometry` and :mod:`lumbo_bids.metrics`."""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec, isdefined, traits

from ..utils.numbers import format_float


class _MorphometricsInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="binary cord mask on the native grid")


class _MorphometricsOutputSpec(TraitedSpec):
    out_tsv = File(exists=True, desc="per-slice table")
    metadata = traits.Dict(desc="TSV sidecar: column descriptions and the per-image summary")


class CordMorphometrics(SimpleInterface):
    """Per-slice CSA, diameters and centroid; cord volume, length and conus tip."""

    input_spec = _MorphometricsInputSpec
    output_spec = _MorphometricsOutputSpec

    def _run_interface(self, runtime):
        from ..morphometry import columns_sidecar, cord_morphometrics, slices_tsv
        from ..utils.images import read_volume

        data, affine, _ = read_volume(self.inputs.in_file)
        result = cord_morphometrics(data, affine)
        out = Path(runtime.cwd) / "morphometrics.tsv"
        out.write_text(slices_tsv(result))
        self._results["out_tsv"] = str(out)
        self._results["metadata"] = {**columns_sidecar(), **result.summary()}
        return runtime


class _EvaluateInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="predicted cord mask on the native grid")
    reference_file = File(exists=True, mandatory=True, desc="manual cord mask, same grid")
    image_file = File(exists=True, desc="the image, same grid: which slices are imaged (partial masks)")


class _EvaluateOutputSpec(TraitedSpec):
    out_tsv = File(exists=True, desc="Dice of each axial slice")
    metadata = traits.Dict(desc="TSV sidecar with Dice, HD95 and relative volume difference")


class EvaluateMask(SimpleInterface):
    """Agreement of the prediction with the manual mask: Dice, HD95, RVD, Dice along z.

    A partial manual mask (:mod:`lumbo_bids.label_coverage`) is scored on its labelled slices
    only (``EvaluatedSlices`` says so): elsewhere it says nothing about the cord."""

    input_spec = _EvaluateInputSpec
    output_spec = _EvaluateOutputSpec

    def _run_interface(self, runtime):
        import numpy as np

        from ..geometry import RPI, reorient
        from ..label_coverage import label_coverage
        from ..metrics import dice, hausdorff95, per_slice_dice, relative_volume_difference
        from ..utils.images import check_same_grid, load_image, read_volume

        pred_img, ref_img = load_image(self.inputs.in_file), load_image(self.inputs.reference_file)
        check_same_grid(pred_img, ref_img, self.inputs.in_file, self.inputs.reference_file)
        pred, affine, _ = read_volume(self.inputs.in_file)
        ref, _, _ = read_volume(self.inputs.reference_file)
        pred, ref = pred > 0.5, ref > 0.5
        zooms = np.linalg.norm(affine[:3, :3], axis=0)
        pred_rpi, rpi_affine = reorient(pred.astype(np.uint8), affine, RPI)
        ref_rpi, _ = reorient(ref.astype(np.uint8), affine, RPI)
        along_z = per_slice_dice(pred_rpi, ref_rpi)
        image = read_volume(self.inputs.image_file)[0] if isdefined(self.inputs.image_file) else None
        coverage = label_coverage(ref, affine, image)
        scored = {}
        if coverage.partial:  # the scores on the labelled slices only
            pred, ref = pred_rpi[..., coverage.labelled] > 0, ref_rpi[..., coverage.labelled] > 0
            zooms = np.linalg.norm(rpi_affine[:3, :3], axis=0)
            n, total = int(coverage.labelled.sum()), int(coverage.imaged.sum())
            scored["EvaluatedSlices"] = f"{n} of {total}: the manual mask is partial, only its labelled slices are scored"
        rows = ["slice\tdice"] + [f"{k}\t{'n/a' if np.isnan(v) else format_float(v, 4)}" for k, v in enumerate(along_z)]
        out = Path(runtime.cwd) / "evaluation.tsv"
        out.write_text("\n".join(rows) + "\n")
        self._results["out_tsv"] = str(out)

        def finite(value: float) -> float | None:
            return None if not np.isfinite(value) else round(float(value), 4)

        self._results["metadata"] = {
            "slice": {"Description": "Index of the axial slice on the RPI-reoriented native grid (0 = most inferior)."},
            "dice": {"Description": "Dice of the predicted and manual masks on this slice (n/a: both empty)."},
            "Dice": finite(dice(pred, ref)),
            "HD95_mm": finite(hausdorff95(pred, ref, zooms)),
            "RelativeVolumeDifference": finite(relative_volume_difference(pred, ref)),
            "Reference": "manual mask",
            **scored,
        }
        return runtime
