"""``--bids-exec-spec``: the Boutiques descriptor is valid, names every option, and the commands
that Boutiques makes from it are the commands our parser reads (BIDS Apps conventions)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

boutiques = pytest.importorskip("boutiques")

from lumbo_bids.cli.parser import build_parser  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def descriptor_file(tmp_path_factory) -> Path:
    proc = subprocess.run([sys.executable, str(REPO / "run.py"), "--bids-exec-spec"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    path = tmp_path_factory.mktemp("boutiques") / "lumbo_bids.json"
    path.write_text(proc.stdout)
    return path


def test_descriptor_is_valid_boutiques(descriptor_file):
    from boutiques import bosh

    bosh(["validate", str(descriptor_file)])  # raises on an invalid descriptor
    descriptor = json.loads(descriptor_file.read_text())
    assert descriptor["container-image"]["image"].startswith("lumbo_bids:")
    assert {e["code"] for e in descriptor["error-codes"]} >= {1, 64, 65, 66, 73, 75, 130}


def test_every_option_of_the_parser_is_an_input(descriptor_file):
    descriptor = json.loads(descriptor_file.read_text())
    ids = [i["id"] for i in descriptor["inputs"]]
    parser = build_parser()
    wanted = [a.dest for _, a in parser.arguments if a.dest not in ("help", "version", "==SUPPRESS==")]
    assert ids == wanted and len(set(ids)) == len(ids)
    level = next(i for i in descriptor["inputs"] if i["id"] == "analysis_level")
    assert level["value-choices"] == ["participant", "group"] and not level["optional"]


def test_a_command_that_boutiques_makes_is_what_we_parse(descriptor_file, tmp_path):
    from boutiques import bosh

    invocation = {
        "bids_dir": "/data/bids", "output_dir": "/data/out", "analysis_level": "participant",
        "participant_label": ["01", "02"], "nprocs": 2, "tta": True, "crop_size": [64, 48], "mem_gb": "8G",
        "threshold": 0.4, "loss": "dice_bce",
    }  # fmt: skip
    path = tmp_path / "invocation.json"
    path.write_text(json.dumps(invocation))
    command = bosh(["exec", "simulate", str(descriptor_file), "-i", str(path)]).shell_command
    words = shlex.split(command)
    assert words[0] == "lumbo-bids"
    args = build_parser().parse_args(words[1:])
    assert (str(args.bids_dir), str(args.output_dir), args.analysis_level) == ("/data/bids", "/data/out", "participant")
    assert args.participant_label == ["01", "02"] and args.nprocs == 2 and args.tta and args.crop_size == [64, 48]
    assert args.mem_gb == pytest.approx(8.0) and args.threshold == 0.4 and args.loss == "dice_bce"
    assert "--epochs" not in words  # no default is written out: it would count as typed
