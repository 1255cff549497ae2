"""Input checks and the derivatives writer (thin Nipype interfaces)."""

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

from ..derivatives import bids_uri, derivative_path, write_derivative


class _ValidateAnatInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="anatomical image")
    mask_file = File(exists=True, desc="manual cord mask (optional)")


class _ValidateAnatOutputSpec(TraitedSpec):
    in_file = File(exists=True, desc="the checked image")
    mask_file = File(desc="the manual mask's cord as read (the mask itself when it is binary)")
    has_mask = traits.Bool(desc="whether a usable manual mask exists")
    input_warnings = traits.Dict(desc="sidecar entries: what is doubtful in the inputs and what was done")


class ValidateAnat(SimpleInterface):
    """Refuse unreadable, empty or 4-D images and masks off the image grid, naming the file;
    say what is doubtful (no orientation in the header, a label map or soft mask as manual
    mask) and how it was read."""

    input_spec = _ValidateAnatInputSpec
    output_spec = _ValidateAnatOutputSpec

    def _run_interface(self, runtime):
        import numpy as np

        from ..utils.images import ImageError, field_of_view_warning, geometry_warning, read_volume

        data, _, img = read_volume(self.inputs.in_file)
        if not np.any(data):
            raise ImageError(f"{self.inputs.in_file}: the image is empty (all zeros)")
        warnings = {}
        if (text := geometry_warning(img)) is not None:
            warnings["GeometryWarning"] = text
        if (text := field_of_view_warning(img)) is not None:
            warnings["FieldOfViewWarning"] = text
        self._results.update(in_file=self.inputs.in_file, has_mask=False)
        if isdefined(self.inputs.mask_file):
            mask_file, warnings_of_mask = self._read_mask(img, data, runtime)
            warnings.update(warnings_of_mask)
            self._results.update(mask_file=mask_file, has_mask=True)
        self._results["input_warnings"] = warnings
        return runtime

    def _read_mask(self, img, data, runtime) -> tuple[str, dict]:
        """The mask's cord (the mask itself, or a binary copy when it is read differently), and
        the sidecar entries saying how it was read and whether it is partial."""
        import numpy as np

        from ..label_coverage import label_coverage
        from ..utils.images import check_same_grid, interpret_mask, load_image, read_volume, save_image

        mask_img = load_image(self.inputs.mask_file)
        check_same_grid(img, mask_img, self.inputs.in_file, self.inputs.mask_file)
        mask, affine, _ = read_volume(self.inputs.mask_file)
        cord, meta = interpret_mask(mask, self.inputs.mask_file)
        if (coverage := label_coverage(cord, affine, data)).partial:
            meta["PartialMaskWarning"] = f"{coverage.describe()}; the evaluation scores only its labelled slices"
        if np.array_equal(cord, mask > 0.5):
            return self.inputs.mask_file, meta
        out = Path(runtime.cwd) / "mask_cord.nii.gz"
        return str(save_image(cord, affine, out, mask_img, dtype=np.uint8)), meta


class _DerivativesDataSinkInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="file to store")
    source_file = File(exists=True, mandatory=True, desc="the raw BIDS file it derives from")
    bids_dir = traits.Directory(exists=True, mandatory=True)
    output_dir = traits.Directory(mandatory=True)
    entities = traits.Dict(mandatory=True, desc="short BIDS entities of the source (sub, ses, acq...)")
    suffix = traits.Str(mandatory=True)
    extension = traits.Str(".nii.gz", usedefault=True)
    space = traits.Str()
    res = traits.Str()
    label = traits.Str()
    desc = traits.Str()
    metadata = traits.Dict(desc="sidecar content added to Sources")
    extra_sources = traits.List(File(exists=True), desc="other raw files it derives from")
    json_sidecar = traits.Bool(True, usedefault=True)
    input_warnings = traits.Dict(desc="what the input checks found doubtful, added to the sidecar")
    run_id = traits.Str(desc="the run that writes it (sidecar 'RunID'; its log: sub-XX/log/<RunID>/)")


class _DerivativesDataSinkOutputSpec(TraitedSpec):
    out_file = File(exists=True)
    out_meta = File()


class DerivativesDataSink(SimpleInterface):
    """Copy a result into ``OUTPUT_DIR`` under its BIDS-derivatives name, atomically.

    The sidecar gets ``Sources`` as BIDS URIs into the raw dataset (``bids:raw:...``) or the
    labels dataset (``bids:labels:...``) plus ``metadata``, and ``RunID``: the run that wrote it,
    so that outputs of different runs in one folder can be told apart.
    """

    input_spec = _DerivativesDataSinkInputSpec
    output_spec = _DerivativesDataSinkOutputSpec
    # Runs on every execution, cached or not (as niworkflows' sink does): the work dir may be
    # reused with a new or cleaned OUTPUT_DIR, which must still receive every derivative.
    _always_run = True

    def _run_interface(self, runtime):
        extra = {
            key: getattr(self.inputs, key) for key in ("space", "res", "label", "desc") if isdefined(getattr(self.inputs, key))
        }
        out = derivative_path(
            Path(self.inputs.output_dir), dict(self.inputs.entities), self.inputs.suffix, self.inputs.extension, **extra
        )
        sidecar = out.with_name(out.name.split(".")[0] + ".json") if self.inputs.json_sidecar else None
        write_derivative(Path(self.inputs.in_file), out, sidecar, self._sidecar_content() if sidecar else None)
        self._results["out_file"] = str(out)
        if sidecar is not None:
            self._results["out_meta"] = str(sidecar)
        return runtime

    def _sidecar_content(self) -> dict:
        bids_dir = Path(self.inputs.bids_dir)
        sources = [bids_uri(Path(self.inputs.source_file), bids_dir)]
        for extra_src in self.inputs.extra_sources if isdefined(self.inputs.extra_sources) else []:
            extra_path = Path(extra_src)
            try:
                sources.append(bids_uri(extra_path, bids_dir))
            except ValueError:
                sources.append(extra_path.as_uri())
        meta = {"Sources": sources}
        for extra in (self.inputs.metadata, self.inputs.input_warnings):
            if isdefined(extra):
                meta.update(json.loads(json.dumps(extra, default=str)))
        if isdefined(self.inputs.run_id):
            meta["RunID"] = self.inputs.run_id
        return meta
