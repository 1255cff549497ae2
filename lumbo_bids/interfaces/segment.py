"""Thin Nipype interfaces for cord localisation, intensity standardisation and segmentation: each
node loads its input, calls one method of :class:`~lumbo_bids.preprocess.Preprocessor` or
:class:`~lumbo_bids.model.predictor.Predictor` with the model's plan, and saves the result."""

from __future__ import annotations

import json
from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    traits,
)


def _out(runtime, name: str) -> Path:
    return Path(runtime.cwd) / name


class _LocaliseInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="resampled RPI image")
    model = traits.Str(mandatory=True, desc="localiser artifact folder, or an SCT *_ctr.h5 file")
    model_checksum = traits.Str(desc="changes the cache key when the model changes")
    omp_nthreads = traits.Int(1, usedefault=True)


class _LocaliseOutputSpec(TraitedSpec):
    heatmap_file = File(exists=True, desc="cord heat-map on the input grid, in [0, 1]")


class LocaliseCord(SimpleInterface):
    """Cord heat-map of every axial slice with a 2D network (ours, or SCT's ``*_ctr.h5``)."""

    input_spec = _LocaliseInputSpec
    output_spec = _LocaliseOutputSpec

    def _run_interface(self, runtime):
        from ..preprocess import Preprocessor
        from ..utils.images import read_volume, save_image

        _limit_threads(self.inputs.omp_nthreads)
        data, affine, img = read_volume(self.inputs.in_file)
        heatmap = Preprocessor(localiser=self.inputs.model).localise(data, affine)
        out = save_image(heatmap, affine, _out(runtime, "heatmap.nii.gz"), img, dtype="float32")
        self._results["heatmap_file"] = str(out)
        return runtime


class _StandardiseInputSpec(BaseInterfaceInputSpec):
    in_stack = File(exists=True, mandatory=True, desc="cropped image (.npy)")
    plan = traits.Dict(mandatory=True, desc="the model's plan, with the run's overrides (ModelPlan.to_dict)")


class _StandardiseOutputSpec(TraitedSpec):
    out_stack = File(exists=True)


class Standardise(SimpleInterface):
    """Intensity standardisation as the model's plan says (robust z-score, or Nyúl landmarks)."""

    input_spec = _StandardiseInputSpec
    output_spec = _StandardiseOutputSpec

    def _run_interface(self, runtime):
        import numpy as np

        out = _predictor(self.inputs.plan).standardise(np.load(self.inputs.in_stack))
        np.save(_out(runtime, "standardised.npy"), out)
        self._results["out_stack"] = str(_out(runtime, "standardised.npy"))
        return runtime


class _SegmentInputSpec(BaseInterfaceInputSpec):
    in_stack = File(exists=True, mandatory=True, desc="standardised cropped image (.npy)")
    model = traits.Directory(exists=True, mandatory=True, desc="segmentation model artifact")
    model_checksum = traits.Str(desc="changes the cache key when the model changes")
    plan = traits.Dict(mandatory=True, desc="the model's plan, with the run's overrides (ModelPlan.to_dict)")
    tta = traits.Bool(False, usedefault=True, desc="test-time flip augmentation")
    omp_nthreads = traits.Int(1, usedefault=True)


class _SegmentOutputSpec(TraitedSpec):
    prob_stack = File(exists=True, desc="cord probability on the cropped grid (.npy)")


class Segment(SimpleInterface):
    """Sliding-window prediction of the cord probability with the 3D network."""

    input_spec = _SegmentInputSpec
    output_spec = _SegmentOutputSpec

    def _run_interface(self, runtime):
        import numpy as np

        from ..model.artifact import load_artifact
        from ..model.predictor import Predictor
        from ..plan import ModelPlan

        _limit_threads(self.inputs.omp_nthreads)
        predictor = Predictor.from_artifact(load_artifact(self.inputs.model), ModelPlan.from_dict(self.inputs.plan))
        prob = predictor.probability(np.load(self.inputs.in_stack), tta=bool(self.inputs.tta))
        np.save(_out(runtime, "prob.npy"), prob.astype(np.float32))
        self._results["prob_stack"] = str(_out(runtime, "prob.npy"))
        return runtime


class _PostprocessInputSpec(BaseInterfaceInputSpec):
    prob_stack = File(exists=True, mandatory=True)
    plan = traits.Dict(mandatory=True, desc="the model's plan (its threshold), with the run's overrides")


class _PostprocessOutputSpec(TraitedSpec):
    out_stack = File(exists=True, desc="binary cord mask on the cropped grid (.npy, uint8)")


class Postprocess(SimpleInterface):
    """Threshold, keep the components along the centerline, fill holes slice by slice."""

    input_spec = _PostprocessInputSpec
    output_spec = _PostprocessOutputSpec

    def _run_interface(self, runtime):
        import numpy as np

        mask = _predictor(self.inputs.plan).mask(np.load(self.inputs.prob_stack))
        np.save(_out(runtime, "mask.npy"), mask.astype(np.uint8))
        self._results["out_stack"] = str(_out(runtime, "mask.npy"))
        return runtime


def _predictor(plan: dict):
    """A :class:`~lumbo_bids.model.predictor.Predictor` without a network: the plan's
    standardisation and post-processing (the nodes that need no model)."""
    from ..model.predictor import Predictor
    from ..plan import ModelPlan

    return Predictor(None, ModelPlan.from_dict(plan))


def _limit_threads(n: int) -> None:
    """Keep TensorFlow within the node's thread budget (--omp-nthreads); other backends take
    theirs from the environment (``XLA_FLAGS``, ``OMP_NUM_THREADS``) when the process starts."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(min(n, 2))
    except RuntimeError:  # already initialised in this process
        pass


def read_json(path: str) -> dict:
    return json.loads(Path(path).read_text())
