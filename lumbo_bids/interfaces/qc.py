"""Thin Nipype interface over :mod:`lumbo_bids.qc`: the failure flags of one segmentation."""

from __future__ import annotations

import json
from pathlib import Path

from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec, isdefined, traits


class _QCFlagsInputSpec(BaseInterfaceInputSpec):
    prob_stack = File(exists=True, mandatory=True, desc="cord probability on the cropped grid (.npy)")
    mask_stack = File(exists=True, mandatory=True, desc="post-processed binary mask on the cropped grid (.npy)")
    geometry_json = File(exists=True, mandatory=True, desc="PreprocGeometry of the crop (resolution, crop centres)")
    image_stack = File(exists=True, desc="the cropped image (.npy): which slices have signal")
    support_stack = File(exists=True, desc="the manual mask the centerline came from, cropped (.npy)")
    heatmap_file = File(exists=True, desc="the localiser's heat-map on the resampled grid (NIfTI)")
    native_mask = File(exists=True, desc="the mask as delivered, on the source grid: when it is empty, so is the mask")


class _QCFlagsOutputSpec(TraitedSpec):
    metadata = traits.Dict(desc='mask sidecar entries: {"QCFlags": [raised flags], "QCMeasures": {measure: value}}')
    flags = traits.List(traits.Str, desc="names of the raised flags")


class QCFlags(SimpleInterface):
    """Measures of the segmentation (probability margin and entropy, CSA, breaks, extent,
    centerline) and the failure flags they raise (:data:`lumbo_bids.qc.FLAGS`).

    Where the centerline was seen (how far the mask should reach) comes from ``support_stack``
    (centerline from a manual mask: a conus that ends above it is short too) or ``heatmap_file``
    (from the localiser). When the mask on the source grid (``native_mask``) is empty (a field of
    view smaller than the 0.5 mm grid's cord: nothing is left once resampled back), the measures
    are those of an empty mask, so ``empty_mask`` is raised on what the user gets."""

    input_spec = _QCFlagsInputSpec
    output_spec = _QCFlagsOutputSpec

    def _run_interface(self, runtime):
        import numpy as np

        from ..errors import LumboError
        from ..geometry import PreprocGeometry, crop_around_centerline
        from ..qc import qc_measures, raised_flags, rounded, support_from_heatmap
        from ..utils.images import read_volume

        geometry = PreprocGeometry.from_dict(json.loads(Path(self.inputs.geometry_json).read_text()))
        prob, mask = np.load(self.inputs.prob_stack), np.load(self.inputs.mask_stack)
        image = np.load(self.inputs.image_stack) if isdefined(self.inputs.image_stack) else None
        if geometry.crop is None or prob.shape != geometry.crop.shape:
            raise LumboError(f"{self.inputs.prob_stack}: probability of shape {prob.shape} is not on the crop grid")
        resolution = float(np.mean(geometry.resampled.zooms))
        support, manual = None, isdefined(self.inputs.support_stack)  # manual: the support is a manual mask
        if manual:
            support = np.load(self.inputs.support_stack).any(axis=(0, 1))
        elif isdefined(self.inputs.heatmap_file):
            heat, _, _ = read_volume(self.inputs.heatmap_file)
            support = support_from_heatmap(crop_around_centerline(heat, geometry.crop), resolution)
        if isdefined(self.inputs.native_mask) and not np.any(read_volume(self.inputs.native_mask)[0]):
            mask = np.zeros_like(mask)
        measures = qc_measures(prob, mask, resolution, geometry.crop.centers, image, support, manual)
        flags = raised_flags(measures)
        self._results["flags"] = flags
        self._results["metadata"] = {"QCFlags": flags, "QCMeasures": rounded(measures)}
        return runtime
