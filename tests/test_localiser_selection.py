"""The group level keeps a fine-tuned localiser only when it is no worse than where it started
(lumbo_bids.group.localiser.select_localiser): on the validation images, its centerline error."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from lumbo_bids.group.localiser import localiser_got_worse, select_localiser


def _tuned(before: dict, after: dict):
    return SimpleNamespace(before=before, after=after)


def _e(mean, worst):
    return {"mean_mm": mean, "max_mm": worst}


def test_a_localiser_made_worse_by_fine_tuning_is_not_kept(caplog):
    # the figures of the bundled rate-don't-draw run: 0.7/3.3 mm before, 0.9/4.7 mm after
    worse = _tuned({"sub-PAM50small_T2w": _e(0.7, 3.3)}, {"sub-PAM50small_T2w": _e(0.9, 4.7)})
    assert "grew from 0.7/3.3 to 0.9/4.7 mm" in localiser_got_worse(worse)
    with caplog.at_level(logging.WARNING, logger="lumbo_bids.group"):
        assert select_localiser(SimpleNamespace(keep_worse_localiser=False), worse) is None
    assert "the shipped localiser is kept" in caplog.text and "--keep-worse-localiser" in caplog.text
    assert select_localiser(SimpleNamespace(keep_worse_localiser=True), worse) is worse  # asked for


def test_a_localiser_as_good_or_better_is_kept():
    config = SimpleNamespace(keep_worse_localiser=False)
    better = _tuned({"a": _e(1.2, 4.0), "b": _e(None, None)}, {"a": _e(0.8, 2.0), "b": _e(2.0, 5.0)})
    assert localiser_got_worse(better) is None and select_localiser(config, better) is better
    noise = _tuned({"a": _e(0.70, 3.3)}, {"a": _e(0.79, 4.2)})  # within 0.1 mm mean and 1 mm max
    assert select_localiser(config, noise) is noise
    assert select_localiser(config, None) is None  # not fine-tuned at all


def test_a_localiser_that_loses_the_cord_is_not_kept():
    lost = _tuned({"a": _e(0.5, 1.0), "b": _e(0.6, 1.2)}, {"a": _e(0.4, 0.9), "b": _e(None, None)})
    assert localiser_got_worse(lost) == "it finds no cord in b"
    assert select_localiser(SimpleNamespace(keep_worse_localiser=False), lost) is None


def test_the_card_records_a_localiser_that_was_not_kept():
    from lumbo_bids.group.localiser import localiser_card

    run = _tuned({"a": _e(0.7, 3.3)}, {"a": _e(0.9, 4.7)})
    run.init = SimpleNamespace(path="shipped", manifest={"name": "loc"}, checksum="abc")
    run.cfg = SimpleNamespace(to_dict=lambda: {"epochs": 2})
    run.result = SimpleNamespace(epochs_run=2, best_epoch=0, seconds=3.0, best_val_dice=0.5)
    kept = localiser_card(run)
    assert kept["fine_tuned"] is True and "not_kept" not in kept and "used" not in kept
    rejected = localiser_card(run, localiser_got_worse(run))
    assert rejected["fine_tuned"] is False and rejected["used"] == "the shipped localiser"
    assert "grew from 0.7/3.3 to 0.9/4.7 mm" in rejected["not_kept"]
    assert rejected["centerline_error_mm_after"] == {"a": _e(0.9, 4.7)}  # the rejected run stays on record
