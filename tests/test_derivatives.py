"""Writing a derivative and its sidecar as a pair: nothing half-written, one-line errors (issue 14)."""

from __future__ import annotations

import errno
import json
import os
import pickle
from pathlib import Path

import pytest

from lumbo_bids import derivatives
from lumbo_bids.derivatives import atomic_write_bytes, write_derivative
from lumbo_bids.errors import ExitCode, LumboError, OutputError, output_error


@pytest.fixture()
def pair(tmp_path):
    src = tmp_path / "work" / "mask.nii.gz"
    src.parent.mkdir()
    src.write_bytes(b"new image")
    out = tmp_path / "out" / "sub-01_mask.nii.gz"
    return src, out, out.with_name("sub-01_mask.json")


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_pair_is_written(pair):
    src, out, sidecar = pair
    write_derivative(src, out, sidecar, {"Sources": ["bids:raw:x"], "Value": -0.0})
    assert out.read_bytes() == b"new image"
    assert json.loads(sidecar.read_text()) == {"Sources": ["bids:raw:x"], "Value": 0.0}
    assert oct(out.stat().st_mode & 0o777) == "0o644" and not leftovers(out.parent)


def _full_while_filling(name: str):
    fill = derivatives._fill

    def fill_until_full(tmp, data=None, src=None):
        if Path(tmp).name.startswith(f".{name}."):
            Path(tmp).write_bytes(b"part")
            raise OSError(errno.ENOSPC, "No space left on device")
        return fill(tmp, data=data, src=src)

    return fill_until_full


@pytest.mark.parametrize("failing", ["image", "sidecar"])
def test_disk_full_leaves_nothing_half_written(pair, monkeypatch, failing):
    src, out, sidecar = pair
    victim = out if failing == "image" else sidecar
    monkeypatch.setattr(derivatives, "_fill", _full_while_filling(victim.name))
    with pytest.raises(OutputError) as info:
        write_derivative(src, out, sidecar, {"Sources": []})
    assert str(info.value) == f"cannot write {victim}: No space left on device"
    assert info.value.code == ExitCode.CANT_CREATE
    assert not out.exists() and not sidecar.exists() and not leftovers(out.parent)


def test_an_existing_pair_survives_a_failed_rewrite(pair, monkeypatch):
    src, out, sidecar = pair
    write_derivative(src, out, sidecar, {"Run": 1})
    src.write_bytes(b"newer image")
    monkeypatch.setattr(derivatives, "_fill", _full_while_filling(out.name))
    with pytest.raises(OutputError):
        write_derivative(src, out, sidecar, {"Run": 2})
    assert out.read_bytes() == b"new image" and json.loads(sidecar.read_text()) == {"Run": 1}
    assert not leftovers(out.parent)


def test_a_new_sidecar_goes_when_its_file_cannot_follow(pair, monkeypatch):
    src, out, sidecar = pair
    replace = os.replace

    def refuse_the_image(a, b):
        if Path(b) == out:
            raise PermissionError(errno.EACCES, "Permission denied", str(a))
        return replace(a, b)

    monkeypatch.setattr(derivatives.os, "replace", refuse_the_image)
    with pytest.raises(OutputError, match=f"cannot write {out}: Permission denied"):
        write_derivative(src, out, sidecar, {})
    assert not out.exists() and not sidecar.exists() and not leftovers(out.parent)


def test_other_errors_are_not_output_errors(pair, monkeypatch):
    src, out, sidecar = pair
    src.unlink()
    with pytest.raises(FileNotFoundError) as info:
        write_derivative(src, out, sidecar, {})
    assert info.value.filename == str(src)  # the missing source is named, not the derivative
    assert not out.exists() and not sidecar.exists() and not leftovers(out.parent)

    def unreadable(a, b):  # the source cannot be read: not a problem of OUTPUT_DIR
        raise PermissionError(errno.EACCES, "Permission denied", str(a))

    src.write_bytes(b"image")
    monkeypatch.setattr(derivatives.shutil, "copyfile", unreadable)
    with pytest.raises(PermissionError):
        write_derivative(src, out, sidecar, {})
    assert not leftovers(out.parent)


def test_atomic_write_names_the_file_not_its_temporary(tmp_path, monkeypatch):
    target = tmp_path / "sub-01.html"
    monkeypatch.setattr(derivatives, "_fill", _full_while_filling(target.name))
    with pytest.raises(OSError) as info:
        atomic_write_bytes(target, b"<html>")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert str(output_error(info.value)) == f"cannot write {target}: No space left on device"
    assert list(tmp_path.iterdir()) == []


def test_errors_keep_their_code_through_pickling():
    assert output_error(OSError(errno.ENOENT, "No such file or directory", "x")) is None
    for error in (OutputError("cannot write x: No space left on device"), LumboError("no input", ExitCode.NO_INPUT)):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and copy.code == error.code and str(copy) == str(error)


def test_source_dataset_and_container_are_named(tmp_path, monkeypatch):
    """BEP027 / BIDS: SourceDatasets names the input (its DOI and version when it gives them);
    GeneratedBy names our image, with the digest that whoever runs it passes in."""
    from lumbo_bids import __version__, derivatives

    tag = f"lumbo_bids:{__version__}"
    raw = {"Name": "ds", "DatasetDOI": "doi:10.18112/openneuro.ds000001.v1.0.0", "DatasetVersion": "1.0.0"}
    description = derivatives.dataset_description(tmp_path, raw)
    assert description["SourceDatasets"] == [
        {"URL": tmp_path.as_uri(), "DOI": "doi:10.18112/openneuro.ds000001.v1.0.0", "Version": "1.0.0"}
    ]
    assert derivatives.dataset_description(tmp_path, {"Name": "ds"})["SourceDatasets"] == [{"URL": tmp_path.as_uri()}]
    assert "Container" not in description["GeneratedBy"][0]  # natively: no container claimed
    marker = tmp_path / "VERSION"
    marker.write_text("0.1.0")
    monkeypatch.setattr(derivatives, "IMAGE_MARKER", marker)
    monkeypatch.setenv("LUMBO_BIDS_IMAGE_DIGEST", "sha256:" + "a" * 64)
    monkeypatch.delenv("SINGULARITY_CONTAINER", raising=False)
    monkeypatch.delenv("APPTAINER_CONTAINER", raising=False)
    assert derivatives.container_info() == {"Type": "docker", "Tag": tag, "Digest": "sha256:" + "a" * 64}
    monkeypatch.setenv("APPTAINER_CONTAINER", "/images/lumbo_bids.sif")
    monkeypatch.delenv("LUMBO_BIDS_IMAGE_DIGEST")
    info = derivatives.container_info()
    assert info == {"Type": "singularity", "Tag": tag, "URI": "file:///images/lumbo_bids.sif"}
