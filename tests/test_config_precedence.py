"""``--config-file`` precedence: command line > config file > built-in default (no run needed)."""

from __future__ import annotations

import json

import pytest

from lumbo_bids.cli.parser import build_parser
from lumbo_bids.cli.run import _apply_config_file, given_options
from lumbo_bids.errors import LumboError


def _resolve(tmp_path, *options, config):
    path = tmp_path / "best_config.json"
    path.write_text(json.dumps(config))
    argv = ["bids", "out", "group", "--config-file", str(path), *options]
    args = build_parser().parse_args(argv)
    _apply_config_file(args, given_options(argv))
    return args


def test_a_value_typed_equal_to_the_default_still_wins(tmp_path):
    default = build_parser().get_default("epochs")
    args = _resolve(tmp_path, "--epochs", str(default), config={"epochs": default + 7})
    assert args.epochs == default  # the old rule ("equal to the default = not given") took 37


def test_the_config_file_fills_what_the_command_line_left_out(tmp_path):
    parser = build_parser()
    args = _resolve(tmp_path, "--learning-rate", "0.002", config={"learning_rate": 0.0003, "epochs": 5, "loss": "dice_bce"})
    assert args.learning_rate == 0.002  # given: command line wins
    assert args.epochs == 5 and args.loss == "dice_bce"  # not given: from the file
    assert args.batch_size == parser.get_default("batch_size")  # in neither: built-in default


def test_config_file_only_keys_are_read(tmp_path):
    args = _resolve(tmp_path, config={"patch_size": [32, 32, 32], "freeze": "encoder"})
    assert tuple(args.patch_size) == (32, 32, 32) and args.freeze == "encoder"


def test_given_options_lists_only_what_was_typed():
    given = given_options(["bids", "out", "group", "--epochs", "3", "--participant-label", "01"])
    assert {"epochs", "participant_label"} <= given
    assert not given & {"learning_rate", "batch_size", "loss", "config_file"}


def test_a_bad_value_in_the_file_is_a_usage_error(tmp_path):
    with pytest.raises(LumboError, match="epochs"):
        _resolve(tmp_path, config={"epochs": 0})
