"""Thin Nipype interfaces over the preprocessing steps: each node loads its inputs, calls one
method of :class:`~lumbo_bids.preprocess.Preprocessor` and saves the result."""

from __future__ import annotations

import json
from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from ..centerline import DEFAULT_DEGREE
from ..utils.numbers import dumps_json, format_float


def _out(runtime, name: str) -> Path:
    return Path(runtime.cwd) / name


def centerline_csv(world) -> str:
    """The ``centerline.csv`` text: one ``slice,x_mm,y_mm,z_mm`` row per axial slice.

    Parameters
    ----------
    world : array_like
        ``(nz, 3)`` world coordinates (mm) of the centerline point of each slice.

    Returns
    -------
    str
        CSV text, coordinates with three decimals; a coordinate that rounds to zero is
        written ``0.000``, never ``-0.000``.
    """
    rows = [",".join([str(z), *(format_float(v, 3) for v in point)]) for z, point in enumerate(world)]
    return "\n".join(["slice,x_mm,y_mm,z_mm", *rows]) + "\n"


class _ReorientInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True)
    is_mask = traits.Bool(False, usedefault=True, desc="binarise at 0.5 and store uint8")


class _ReorientOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="image in SCT 'RPI' (nibabel LAS) orientation")


class Reorient(SimpleInterface):
    """Reorient to SCT "RPI" (nibabel ``LAS``): exact voxel permutation, no interpolation."""

    input_spec = _ReorientInputSpec
    output_spec = _ReorientOutputSpec

    def _run_interface(self, runtime):
        from ..preprocess import Preprocessor
        from ..utils.images import read_volume, save_image

        data, affine, img = read_volume(self.inputs.in_file)
        data, affine = Preprocessor.reorient(data, affine, is_mask=self.inputs.is_mask)
        self._results["out_file"] = str(save_image(data, affine, _out(runtime, "rpi.nii.gz"), img))
        return runtime


class _ResampleInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True)
    resolution = traits.Float(0.5, usedefault=True, desc="isotropic voxel size (mm)")
    is_mask = traits.Bool(False, usedefault=True, desc="linear interpolation then threshold 0.5")


class _ResampleOutputSpec(TraitedSpec):
    out_file = File(exists=True)


class Resample(SimpleInterface):
    """Resample to an isotropic grid with the same orientation and field of view."""

    input_spec = _ResampleInputSpec
    output_spec = _ResampleOutputSpec

    def _run_interface(self, runtime):
        from ..preprocess import Preprocessor
        from ..utils.images import read_volume, save_image

        data, affine, img = read_volume(self.inputs.in_file)
        preprocessor = Preprocessor(self.inputs.resolution)
        out, target = preprocessor.resample_to_resolution(data, affine, is_mask=self.inputs.is_mask)
        self._results["out_file"] = str(save_image(out, target.affine, _out(runtime, "resampled.nii.gz"), img))
        return runtime


class _CenterlineInputSpec(BaseInterfaceInputSpec):
    mask_file = File(exists=True, desc="cord mask on the resampled RPI grid")
    heatmap_file = File(exists=True, desc="cord heat-map on the resampled RPI grid")
    degree = traits.Int(DEFAULT_DEGREE, usedefault=True, desc="polynomial degree of the fitted curve")


class _CenterlineOutputSpec(TraitedSpec):
    centerline_json = File(exists=True, desc="in-plane voxel coordinates per axial slice")
    centerline_file = File(exists=True, desc="centerline as an image (one voxel per slice)")
    centerline_csv = File(exists=True, desc="world-space (mm) points, one per slice")
    method = traits.Str(desc="'manual-mask' or 'heatmap'")


class Centerline(SimpleInterface):
    """Cord centerline from a manual mask, or from a localiser heat-map when no mask exists."""

    input_spec = _CenterlineInputSpec
    output_spec = _CenterlineOutputSpec

    def _run_interface(self, runtime):
        import numpy as np
        from nibabel.affines import voxel_sizes

        from ..centerline import centerline_image, centerline_world
        from ..preprocess import Preprocessor
        from ..utils.images import read_volume, save_image

        if isdefined(self.inputs.mask_file):
            data, affine, img = read_volume(self.inputs.mask_file)
            xy = Preprocessor.find_centerline(mask=data, degree=self.inputs.degree)
            method = "manual-mask"
        elif isdefined(self.inputs.heatmap_file):
            data, affine, img = read_volume(self.inputs.heatmap_file)
            xy = Preprocessor.find_centerline(heatmap=data, zooms=voxel_sizes(affine), degree=self.inputs.degree)
            method = "heatmap"
        else:
            raise ValueError("Centerline needs mask_file or heatmap_file")
        cl_json = _out(runtime, "centerline.json")
        cl_json.write_text(dumps_json({"method": method, "xy": np.asarray(xy).tolist()}))
        save_image(centerline_image(xy, data.shape), affine, _out(runtime, "centerline.nii.gz"), img, dtype=np.uint8)
        _out(runtime, "centerline.csv").write_text(centerline_csv(centerline_world(xy, affine)))
        self._results.update(
            centerline_json=str(cl_json),
            centerline_file=str(_out(runtime, "centerline.nii.gz")),
            centerline_csv=str(_out(runtime, "centerline.csv")),
            method=method,
        )
        return runtime


class _CropInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="resampled RPI image")
    centerline_json = File(exists=True, mandatory=True)
    native_file = File(exists=True, mandatory=True, desc="the source image (native grid)")
    rpi_file = File(exists=True, mandatory=True, desc="the reoriented image (RPI grid)")
    crop_size = traits.Tuple(traits.Int(64), traits.Int(64), usedefault=True)
    mask_file = File(exists=True, desc="resampled mask to crop alongside")


class _CropOutputSpec(TraitedSpec):
    out_stack = File(exists=True, desc="per-slice crop (sx, sy, nz) as .npy")
    mask_stack = File(desc="the mask cropped the same way (.npy)")
    out_file = File(exists=True, desc="axis-aligned bounding crop as NIfTI (world-aligned)")
    mask_file = File(desc="bounding crop of the mask (NIfTI)")
    geometry_json = File(exists=True, desc="PreprocGeometry: what maps results back to native space")


class CropAroundCenterline(SimpleInterface):
    """Crop a fixed in-plane box centred on the centerline on every axial slice."""

    input_spec = _CropInputSpec
    output_spec = _CropOutputSpec

    def _run_interface(self, runtime):
        import numpy as np

        from ..geometry import Grid, PreprocGeometry, bounding_crop
        from ..preprocess import Preprocessor
        from ..utils.images import load_image, read_volume, save_image

        data, affine, img = read_volume(self.inputs.in_file)
        xy = np.asarray(json.loads(Path(self.inputs.centerline_json).read_text())["xy"], dtype=float)
        grid = Grid(tuple(data.shape), affine)
        preprocessor = Preprocessor(crop_size=tuple(self.inputs.crop_size))
        stack, box = preprocessor.crop(data, grid, xy)
        native, rpi = load_image(self.inputs.native_file), load_image(self.inputs.rpi_file)
        geometry = PreprocGeometry(
            native=Grid(tuple(native.shape[:3]), native.affine),
            rpi=Grid(tuple(rpi.shape[:3]), rpi.affine),
            resampled=grid,
            crop=box,
        )
        _out(runtime, "geometry.json").write_text(dumps_json(geometry.to_dict()))
        np.save(_out(runtime, "stack.npy"), stack)
        slices, bbox_grid = bounding_crop(box)
        save_image(data[slices], bbox_grid.affine, _out(runtime, "bbox.nii.gz"), img, dtype=np.float32)
        self._results.update(
            out_stack=str(_out(runtime, "stack.npy")),
            out_file=str(_out(runtime, "bbox.nii.gz")),
            geometry_json=str(_out(runtime, "geometry.json")),
        )
        if isdefined(self.inputs.mask_file):
            mask, _, _ = read_volume(self.inputs.mask_file)
            mask = (mask > 0.5).astype(np.uint8)
            np.save(_out(runtime, "mask_stack.npy"), Preprocessor.crop_mask(mask, box))
            save_image(mask[slices], bbox_grid.affine, _out(runtime, "mask_bbox.nii.gz"), img, dtype=np.uint8)
            self._results["mask_stack"] = str(_out(runtime, "mask_stack.npy"))
            self._results["mask_file"] = str(_out(runtime, "mask_bbox.nii.gz"))
        return runtime


class _ToNativeInputSpec(BaseInterfaceInputSpec):
    in_stack = File(exists=True, mandatory=True, desc=".npy array on the cropped grid")
    geometry_json = File(exists=True, mandatory=True)
    reference_file = File(exists=True, mandatory=True, desc="the source image (header donor)")
    threshold = traits.Float(desc="binarise after resampling (masks); unset for soft maps")


class _ToNativeOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="the array on the source's exact native grid")


class ToNative(SimpleInterface):
    """Un-crop, resample back and un-reorient onto the source image's native grid."""

    input_spec = _ToNativeInputSpec
    output_spec = _ToNativeOutputSpec

    def _run_interface(self, runtime):
        import numpy as np

        from ..geometry import PreprocGeometry, to_native
        from ..utils.images import load_image, save_image

        geometry = PreprocGeometry.from_dict(json.loads(Path(self.inputs.geometry_json).read_text()))
        reference = load_image(self.inputs.reference_file)
        threshold = self.inputs.threshold if isdefined(self.inputs.threshold) else None
        native = to_native(np.load(self.inputs.in_stack), geometry, order=1, threshold=threshold)
        dtype = np.uint8 if threshold is not None else np.float32
        out = save_image(native, reference.affine, _out(runtime, "native.nii.gz"), reference, dtype=dtype)
        self._results["out_file"] = str(out)
        return runtime
