"""QC failure flags (lumbo_bids.qc): synthetic cords where the answer is known, the Nipype node on a
tiny crop, the group table, and the manual masks of ds-spine-mini (good) against corrupted copies."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import IMAGE_MASK_PAIRS
from scipy import ndimage

from lumbo_bids.qc import FLAGS, MEASURES, THRESHOLDS, qc_measures, raised_flags, support_from_heatmap

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "validate_flags.py"
_spec = importlib.util.spec_from_file_location("validate_flags", SCRIPT)
validate_flags = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(validate_flags)

RES = 0.5


def tube(nz: int = 80, radius_mm: float = 3.5, size: int = 64, offset_mm: float = 0.0) -> np.ndarray:
    """A straight cord along the crop's central axis (the centerline): a disk on every slice."""
    xs = (np.arange(size) - size // 2)[:, None] * RES - offset_mm
    ys = (np.arange(size) - size // 2)[None, :] * RES
    disk = xs**2 + ys**2 <= radius_mm**2
    return np.repeat(disk[:, :, None], nz, axis=2).astype(np.uint8)


def soft(mask: np.ndarray) -> np.ndarray:
    """A confident network's probability of ``mask``: sharp, sure edges (p > 0.5 is the mask)."""
    return np.clip(ndimage.gaussian_filter(mask.astype(float), 0.6), 0, 1)


def flags_of(mask, prob=None, **kwargs) -> list[str]:
    return raised_flags(qc_measures(soft(mask) if prob is None else prob, mask, RES, **kwargs))


def test_a_clean_tube_raises_nothing_and_its_measures_are_right():
    mask = tube()
    measures = qc_measures(soft(mask), mask, RES)
    assert raised_flags(measures) == []
    assert list(measures) == list(MEASURES)
    assert measures["csa_median_mm2"] == pytest.approx(np.pi * 3.5**2, rel=0.05)
    assert measures["max_gap_mm"] == 0 and measures["centerline_outside_fraction"] == 0
    assert measures["stop_short_mm"] == 0 and measures["far_from_centerline_mm3"] == 0
    assert measures["margin_in_mask"] > 0.8 and measures["entropy_around_mask"] < 0.7


def test_one_table_of_flags_thresholds_and_explanations():
    assert len({f.name for f in FLAGS}) == len(FLAGS) and set(THRESHOLDS) == {f.name for f in FLAGS}
    assert all(f.measure in MEASURES and f.explanation and "\n" not in f.explanation for f in FLAGS)
    mask = tube()
    mask[:, :, 30:36] = 0  # a 3 mm break: on the threshold, not above it
    assert "mask_breaks" not in flags_of(mask)
    assert raised_flags(qc_measures(soft(mask), mask, RES), {"mask_breaks": 2.0}) == ["mask_breaks"]


def test_breaks_along_z():
    mask = tube()
    mask[:, :, 30:40] = 0
    measures = qc_measures(soft(tube()), mask, RES)
    assert measures["max_gap_mm"] == pytest.approx(5.0) and measures["n_gaps"] == 1
    assert "mask_breaks" in raised_flags(measures)


def test_csa_out_of_range_both_ways():
    assert "csa_out_of_range" in flags_of(tube(radius_mm=2.0))  # 12.6 mm^2
    assert "csa_out_of_range" in flags_of(tube(radius_mm=7.0))  # 154 mm^2
    assert "csa_out_of_range" not in flags_of(tube(radius_mm=5.5))  # 95 mm^2: an enlargement


def test_a_conus_taper_is_legitimate_an_abrupt_end_is_not():
    nz = 120
    tapered = tube(nz)
    tapered[:, :, :40] = 0
    for k in range(40, 70):  # the conus: the radius shrinks from ~1 mm to 3.5 mm over 15 mm
        tapered[:, :, k] = tube(1, radius_mm=1.0 + 2.5 * (k - 40) / 30)[:, :, 0]
    measures = qc_measures(soft(tapered), tapered, RES)
    assert measures["end_tapers"] == 1 and measures["bottom_gap_mm"] == pytest.approx(20.0)
    assert raised_flags(measures) == []
    abrupt = tube(nz)
    abrupt[:, :, :40] = 0
    measures = qc_measures(soft(tube(nz)), abrupt, RES)
    assert measures["end_tapers"] == 0 and measures["stop_short_mm"] == pytest.approx(20.0)
    assert "cord_stops_short" in raised_flags(measures)


def test_a_taper_above_the_manual_masks_end_stops_short():
    """The localiser's support follows the canal down the cauda equina, so a taper above it is not
    short; a manual mask is an expert's cord: a taper 20 mm above its end missed the conus."""
    tapered = _conus()  # tip at slice 40 (20 mm)
    below = np.ones(tapered.shape[2], dtype=bool)  # cord seen on every slice, down to slice 0
    for manual, short in ((False, 0.0), (True, 20.0)):
        measures = qc_measures(soft(tapered), tapered, RES, support=below, manual_support=manual)
        assert measures["end_tapers"] == 1 and measures["bottom_gap_mm"] == pytest.approx(20.0)
        assert measures["stop_short_mm"] == pytest.approx(short)
        assert ("cord_stops_short" in raised_flags(measures)) is manual
    reaches = below.copy()
    reaches[:40] = False  # the manual mask ends where the taper does
    assert qc_measures(soft(tapered), tapered, RES, support=reaches, manual_support=True)["stop_short_mm"] == 0


def _conus(nz: int = 120, tip: int = 40) -> np.ndarray:
    mask = tube(nz)
    mask[:, :, :tip] = 0
    for k in range(tip, tip + 30):  # the radius grows from ~1 mm to 3.5 mm over 15 mm
        mask[:, :, k] = tube(1, radius_mm=1.0 + 2.5 * (k - tip) / 30)[:, :, 0]
    return mask


def test_cord_end_uncertain_reads_the_probability_below_the_end_and_abrupt_ends():
    conus = _conus()
    measures = qc_measures(soft(conus), conus, RES)
    assert measures["end_uncertain_mm"] <= 0.5 and "cord_end_uncertain" not in raised_flags(measures)
    faint = soft(conus)
    faint[:, :, 20:40] = np.maximum(faint[:, :, 20:40], 0.3 * tube(20, radius_mm=1.0))  # 10 mm of faint strand
    measures = qc_measures(faint, conus, RES)
    assert measures["end_ambiguous_mm"] == pytest.approx(10.0) and measures["end_abrupt_mm"] == 0
    assert "cord_end_uncertain" in raised_flags(measures)
    blank = np.ones(conus.shape)
    blank[:, :, :36] = 0  # no image under the 2 mm below the tip: nothing to be unsure about beyond it
    assert qc_measures(faint, conus, RES, image=blank)["end_ambiguous_mm"] == pytest.approx(2.0)
    abrupt = tube(120)
    abrupt[:, :, :40] = 0
    measures = qc_measures(soft(abrupt), abrupt, RES)
    assert measures["end_tapers"] == 0 and measures["end_abrupt_mm"] == pytest.approx(20.0)
    assert "cord_end_uncertain" in raised_flags(measures)
    cervical = tube(120)  # reaches the bottom of the stack: a certain end
    assert qc_measures(soft(cervical), cervical, RES)["end_uncertain_mm"] == 0


def test_an_end_with_a_neck_is_not_a_taper_and_makes_the_end_uncertain():
    """A conus narrows to its tip; a piece hanging below a thin neck (a root bundle beside the
    conus, a conus the mask lost on the way down) is not a taper: uncertain from the lowest slice
    up to where the cord is again as wide as that piece."""
    conus = _conus(nz=160, tip=80)
    assert qc_measures(soft(conus), conus, RES)["end_necked_mm"] == 0
    wavy = conus.copy()  # a taper whose radius wobbles by 7 % from slice to slice is still a taper
    for k in range(80, 110):
        wavy[:, :, k] = tube(1, radius_mm=(1.0 + 2.5 * (k - 80) / 30) * (1 + 0.07 * (-1) ** k))[:, :, 0]
    assert qc_measures(soft(wavy), wavy, RES)["end_necked_mm"] == 0
    necked = conus.copy()
    necked[:, :, 74:80] = tube(6, radius_mm=0.8)  # a 3 mm neck of 2 mm^2 below the tip
    necked[:, :, 62:74] = tube(12, radius_mm=2.0)  # and 6 mm of a 12.6 mm^2 bundle below it
    measures = qc_measures(soft(necked), necked, RES)
    # 6 mm of bundle, 3 mm of neck, ~6 mm of conus up to its 2 mm radius
    assert 13.0 <= measures["end_necked_mm"] <= 17.0 and measures["end_tapers"] == 1
    assert measures["end_uncertain_mm"] == measures["end_necked_mm"] and "cord_end_uncertain" in raised_flags(measures)
    at_bottom = necked.copy()
    at_bottom[:, :, :62] = tube(62, radius_mm=2.0)  # the bundle runs out of the field of view: no end in view
    assert qc_measures(soft(at_bottom), at_bottom, RES)["end_uncertain_mm"] == 0


def test_the_top_counts_only_where_the_cord_was_seen_and_imaged():
    nz = 100
    short = tube(nz)
    short[:, :, 70:] = 0  # stops 15 mm below the top
    assert "cord_stops_short" in flags_of(short)
    seen = np.arange(nz) < 72  # the centerline (manual mask, localiser) ends 1 mm above it
    assert "cord_stops_short" not in flags_of(short, support=seen)
    image = np.ones(short.shape)
    image[:, :, 72:] = 0  # the image has no signal there (zero-filled slices)
    assert "cord_stops_short" not in flags_of(short, image=image)


def test_the_centerline_leaving_the_mask_and_voxels_far_from_it():
    shifted = tube(offset_mm=8.0)
    measures = qc_measures(soft(tube()), shifted, RES)
    assert measures["centerline_outside_fraction"] == 1.0
    assert {"centerline_outside_mask", "mask_beyond_probability", "probability_beyond_mask"} <= set(raised_flags(measures))
    blob = tube()
    grid = np.indices(blob.shape).transpose(1, 2, 3, 0)
    blob[np.linalg.norm((grid - (32 + 24, 32, 40)) * RES, axis=-1) <= 3.0] = 1  # 12 mm beside the cord
    measures = qc_measures(soft(tube()), blob, RES)
    assert measures["far_from_centerline_mm3"] > 50
    assert "mask_far_from_centerline" in raised_flags(measures)


def test_probability_margin_and_entropy():
    mask = tube()
    noisy = 0.5 * soft(mask) + 0.5 * np.random.default_rng(0).uniform(size=mask.shape)
    assert {"low_margin_in_mask", "uncertain_around_mask"} <= set(flags_of(mask, noisy))
    dilated = ndimage.binary_dilation(mask, iterations=4).astype(np.uint8)
    assert "mask_beyond_probability" in flags_of(dilated, soft(mask))
    measures = qc_measures(soft(tube(radius_mm=5.0)), tube(radius_mm=4.0), RES)  # an under-segmentation
    assert measures["probability_outside_mask_fraction"] == pytest.approx(1 - 16 / 25, abs=0.03)
    assert raised_flags(measures) == ["probability_beyond_mask"]


def test_an_empty_mask_raises_only_empty_mask():
    mask = np.zeros((16, 16, 10), np.uint8)
    measures = qc_measures(np.zeros(mask.shape), mask, RES)
    assert raised_flags(measures) == ["empty_mask"]
    assert np.isnan(measures["max_gap_mm"]) and measures["slices_with_cord"] == 0
    with pytest.raises(ValueError, match="same 3D shape"):
        qc_measures(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), RES)


def test_support_from_a_heatmap_is_where_the_localiser_saw_cord_near_the_centerline():
    heat = np.zeros((32, 32, 6))
    heat[16, 16, :3] = 0.9  # on the centerline
    heat[2, 2, 3:5] = 0.9  # 9.9 mm away: not the cord the centerline follows
    assert support_from_heatmap(heat, RES).tolist() == [True, True, True, False, False, False]


# -- the Nipype node and the sinks ----------------------------------------------------------------
def test_the_node_writes_the_sidecar_keys(tmp_path):
    from lumbo_bids.geometry import Grid, PreprocGeometry, crop_box_from_centerline
    from lumbo_bids.interfaces.qc import QCFlags

    nz = 40
    mask = tube(nz, size=32)
    mask[:, :, 15:25] = 0
    grid = Grid((48, 48, nz), np.diag([RES, RES, RES, 1.0]))
    box = crop_box_from_centerline(np.full((nz, 2), 24.0), grid, (32, 32))
    geometry = PreprocGeometry(grid, grid, grid, box)
    (tmp_path / "geometry.json").write_text(json.dumps(geometry.to_dict()))
    np.save(tmp_path / "prob.npy", soft(tube(nz, size=32)).astype(np.float32))
    np.save(tmp_path / "mask.npy", mask)
    np.save(tmp_path / "support.npy", tube(nz, size=32))
    node = QCFlags(
        prob_stack=str(tmp_path / "prob.npy"),
        mask_stack=str(tmp_path / "mask.npy"),
        geometry_json=str(tmp_path / "geometry.json"),
        support_stack=str(tmp_path / "support.npy"),
    )
    result = node.run(cwd=str(tmp_path))
    meta = result.outputs.metadata
    assert set(meta) == {"QCFlags", "QCMeasures"} and meta["QCFlags"] == result.outputs.flags
    assert "mask_breaks" in meta["QCFlags"] and meta["QCMeasures"]["max_gap_mm"] == pytest.approx(5.0)
    assert list(meta["QCMeasures"]) == list(MEASURES)
    json.dumps(meta, allow_nan=False)  # the sidecar is strict JSON (undefined -> null)


def test_the_mask_sink_merges_its_sidecar_with_the_flags():
    from lumbo_bids.workflows.outputs import merge_metadata

    merged = merge_metadata({"Type": "ROI", "Manual": False}, {"QCFlags": [], "QCMeasures": {"max_gap_mm": 0.0}})
    assert merged == {"Type": "ROI", "Manual": False, "QCFlags": [], "QCMeasures": {"max_gap_mm": 0.0}}


def test_group_qc_flags_tsv(tmp_path):
    from lumbo_bids.reports.group import write_group_summaries

    anat = tmp_path / "sub-01" / "ses-a" / "anat"
    anat.mkdir(parents=True)
    stem = "sub-01_ses-a_space-orig_label-SC_desc-T2w_mask"
    (anat / f"{stem}.nii.gz").write_bytes(b"")
    sidecar = {
        "Sources": ["bids:raw:sub-01/ses-a/anat/sub-01_ses-a_T2w.nii.gz"],
        "QCFlags": ["mask_breaks", "csa_out_of_range"],
        "QCMeasures": {"max_gap_mm": 5.0, "margin_in_mask": None},
    }
    (anat / f"{stem}.json").write_text(json.dumps(sidecar))
    (anat / "sub-01_ses-a_space-orig_res-05mm_label-centerline_desc-T2w_mask.json").write_text("{}")  # no flags
    assert tmp_path / "group" / "qc_flags.tsv" in write_group_summaries(tmp_path)
    header, row, *rest = (tmp_path / "group" / "qc_flags.tsv").read_text().splitlines()
    assert rest == [] and header.split("\t") == ["subject", "session", "image", "mask", "n_flags", "flags", *MEASURES]
    cells = dict(zip(header.split("\t"), row.split("\t")))
    assert cells["subject"] == "01" and cells["session"] == "a" and cells["image"] == "sub-01_ses-a_T2w"
    assert cells["mask"] == f"sub-01/ses-a/anat/{stem}.nii.gz"
    assert cells["n_flags"] == "2" and cells["flags"] == "mask_breaks,csa_out_of_range"
    assert cells["max_gap_mm"] == "5.0000" and cells["margin_in_mask"] == "n/a" and cells["stop_short_mm"] == "n/a"


# -- real data: the manual masks of ds-spine-mini are good masks, corrupted copies are not ------------
def test_manual_masks_raise_nothing_and_their_corruptions_raise_flags(ds_spine_mini):
    cases = validate_flags.manual_cases(ds_spine_mini)  # the manual masks: good, and a sure probability
    assert len(cases) == len(IMAGE_MASK_PAIRS) == 7
    for name, case in cases.items():
        raised, measures = validate_flags.case_flags(case)
        assert raised == [], (name, raised, measures)
        for corruption, corrupt in validate_flags.CORRUPTIONS.items():
            prob, mask = corrupt(case["prob"], case["mask"], RES)
            assert validate_flags.case_flags(case, prob, mask)[0], (name, corruption)


def test_every_image_gets_a_qc_node_wired_to_its_mask_sidecar(ds_spine_mini, tmp_path):
    from lumbo_bids.cli.parser import build_parser
    from lumbo_bids.config import Config
    from lumbo_bids.utils.bids import build_layout, collect_anat, select_subjects
    from lumbo_bids.workflows.base import init_lumbo_wf

    args = build_parser().parse_args([str(ds_spine_mini), str(tmp_path / "out"), "participant", "-w", str(tmp_path / "w")])
    config = Config.from_namespace(args)
    layout = build_layout(ds_spine_mini)
    inputs = collect_anat(layout, select_subjects(layout, None), None, {}, config.labels_dir)
    graph = init_lumbo_wf(config, inputs)._create_flat_graph()
    qc_nodes = [node for node in graph.nodes if node.name == "qc_flags"]
    assert len(qc_nodes) == sum(len(items) for items in inputs.values()) == 8
    for node in qc_nodes:
        wired = {field for _, _, data in graph.in_edges(node, data=True) for _, field in data["connect"]}
        support = "heatmap_file" if "sctLumbar" in node.fullname else "support_stack"
        assert {"prob_stack", "mask_stack", "geometry_json", "image_stack", "native_mask", support} == wired, node.fullname
    sinks = [node for node in graph.nodes if node.name == "ds_mask"]
    for sink in sinks:
        sources = {(src.name, field) for src, _, data in graph.in_edges(sink, data=True) for _, field in data["connect"]}
        assert ("mask_metadata", "metadata") in sources


@pytest.mark.parametrize(
    ("flags", "shown"), [([], "flags: none"), (["mask_breaks", "csa_out_of_range"], "flags: mask_breaks, csa_out_of_range")]
)
def test_the_done_line_shows_the_raised_flags(tmp_path, flags, shown):
    from types import SimpleNamespace

    from lumbo_bids.derivatives import image_output_path
    from lumbo_bids.participant import image_summary
    from lumbo_bids.utils.bids import AnatInput

    anat = AnatInput(Path("sub-01_T2w.nii.gz"), "01", None, "T2w", None, {"subject": "01"})
    sidecar = image_output_path(tmp_path, anat, "mask", extension=".json")
    sidecar.parent.mkdir(parents=True)
    sidecar.write_text(json.dumps({"CenterlineMethod": "manual mask", "QCFlags": flags}))
    assert image_summary(SimpleNamespace(output_dir=tmp_path), anat).startswith(f"{shown} · centerline: manual mask · ")
