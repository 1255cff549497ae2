"""One predictor: fine-tuning's validation Dice is computed exactly as the participant level
segments (the Standardise -> Segment -> Postprocess nodes), on a real image and the shipped model."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import IMAGE_MASK_PAIRS

from lumbo_bids.metrics import dice
from lumbo_bids.model.artifact import load_artifact
from lumbo_bids.model.predictor import Predictor
from lumbo_bids.model.selection import SHIPPED_SEGMENTATION
from lumbo_bids.preprocess import Preprocessor
from lumbo_bids.training.finetune import RawCase, evaluate_cases
from lumbo_bids.utils.images import read_volume


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """sctTesting's T2w cropped around its manual-mask centerline at 0.5 mm (raw intensities)."""
    image, mask = next((i, m) for i, m in IMAGE_MASK_PAIRS if i.name == "sub-sctTesting_T2w.nii.gz")
    out = tmp_path_factory.mktemp("predictor")
    data, affine, _ = read_volume(image)
    cord, _, _ = read_volume(mask)
    case = Preprocessor(0.5, (64, 64)).run_case(data, affine, cord)
    np.save(out / "stack.npy", case.stack)
    np.save(out / "mask.npy", case.mask_stack)
    return RawCase("sub-sctTesting", "sub-sctTesting_T2w", "T2w", out / "stack.npy", out / "mask.npy")


def _nodes(stack_path, artifact, workdir):
    """The participant level's three nodes, run as Nipype runs them."""
    from lumbo_bids.interfaces.segment import Postprocess, Segment, Standardise

    workdir.mkdir()
    plan = artifact.plan.to_dict()
    std = Standardise(in_stack=str(stack_path), plan=plan).run(cwd=str(workdir))
    seg = Segment(in_stack=std.outputs.out_stack, model=str(artifact.path), plan=plan).run(cwd=str(workdir))
    post = Postprocess(prob_stack=seg.outputs.prob_stack, plan=plan).run(cwd=str(workdir))
    return np.load(post.outputs.out_stack) > 0


def test_validation_dice_is_the_participant_levels_dice(case, tmp_path):
    artifact = load_artifact(SHIPPED_SEGMENTATION)
    participant = _nodes(case.image, artifact, tmp_path / "nodes")
    manual = np.load(case.mask) > 0
    validation = evaluate_cases(artifact.build_model(), [case], artifact.plan)[case.name]
    assert validation == pytest.approx(dice(participant, manual), abs=1e-9)
    assert validation > 0.85  # and it is a real segmentation, not two empty masks
    np.testing.assert_array_equal(Predictor.from_artifact(artifact).segment(np.load(case.image)), participant)
