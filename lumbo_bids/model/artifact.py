"""The model artifact: a directory carrying the network, its weights and its preprocessing plan.

``model.json`` (manifest: architecture, task, contrasts, preprocessing, inference, training card,
sha256 of every file) and ``weights.weights.h5`` (Keras 3 ``save_weights``), nnU-Net style:
inference reads the plan, it never guesses.  May be shipped as a ``.zip`` / ``.tar.gz``.  The manifest's
format and checks are in :mod:`lumbo_bids.model.manifest`, the known networks in
:mod:`lumbo_bids.model.architectures`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from ..errors import ExitCode, LumboError
from ..plan import ModelPlan
from .architectures import ARCHITECTURES
from .manifest import FORMAT, FORMAT_VERSION, MANIFEST_NAME, WEIGHTS_NAME, manifest_problem

ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz")


class ArtifactError(LumboError, ValueError):
    """An unusable model artifact; the message is one line: ``<path>: <what is wrong>``."""

    def __init__(self, path: os.PathLike | str, problem: str, code: int = ExitCode.BAD_DATA):
        super().__init__(f"{path}: {problem}", code)
        self.path, self.problem = Path(path), problem

    def __reduce__(self) -> tuple[type, tuple[Path, str, int]]:  # picklable across processes
        return type(self), (self.path, self.problem, int(self.code))


def sha256_file(path: os.PathLike | str) -> str:
    """Hex sha256 of a file."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _h5_shapes(path: Path) -> list[tuple[int, ...]]:
    """Sorted shapes of every array stored in a Keras weights file."""
    import h5py

    with h5py.File(path, "r") as handle:
        names: list[str] = []
        handle.visit(names.append)
        arrays = [handle[n] for n in names if isinstance(handle[n], h5py.Dataset)]
        return sorted(tuple(int(d) for d in a.shape) for a in arrays)


def _entry(*keys: str) -> property:
    """A read-only property returning ``self.manifest[keys[0]][keys[1]]...``."""

    def get(self: ModelArtifact) -> Any:
        value: Any = self.manifest
        for key in keys:
            value = value[key]
        return value

    return property(get, doc="manifest" + "".join(f"[{k!r}]" for k in keys))


@dataclass
class ModelArtifact:
    """A loaded artifact: the folder holding it and its manifest (``model.json``).

    ``source`` is the archive it was extracted from (``None`` for a folder); the extraction
    folder lives as long as this object.
    """

    path: Path
    manifest: dict[str, Any]
    source: Path | None = None
    _tmp: tempfile.TemporaryDirectory | None = field(default=None, repr=False, compare=False)

    @property
    def origin(self) -> Path:
        """What the user gave: the archive for an extracted artifact, else :attr:`path`."""
        return self.source or self.path

    # manifest entries, read-only (``_entry`` documents each as ``manifest[...]``)
    name = _entry("name")
    architecture = _entry("architecture", "name")
    architecture_config = _entry("architecture", "config")
    task = _entry("task")
    contrasts = _entry("contrasts")

    @property
    def weights_path(self) -> Path:
        return self.path / WEIGHTS_NAME

    @cached_property
    def plan(self):
        """The model's :class:`~lumbo_bids.plan.ModelPlan` (preprocessing and inference, typed)."""
        return ModelPlan.from_manifest(self.manifest)

    @cached_property
    def checksum(self) -> str:
        """sha256 of the weights file as it is on disk."""
        return sha256_file(self.weights_path)

    def check_compatible(self, contrast: str) -> None:
        """Raise :class:`ArtifactError` unless the model was trained on ``contrast`` (``T2w``)."""
        if contrast not in self.contrasts:
            problem = f"contrast {contrast!r} not supported (model trained on {self.contrasts})"
            raise ArtifactError(self.origin, problem)

    def build_model(self) -> Any:
        """Build the network from its architecture and load the weights.

        Returns
        -------
        keras.Model

        Raises
        ------
        ArtifactError
            Unknown architecture, invalid architecture config, weights that do not fit.
        """
        arch = self.architecture
        if arch not in ARCHITECTURES:
            raise ArtifactError(self.origin, f"unknown architecture {arch!r}")
        try:
            model = ARCHITECTURES[arch](dict(self.architecture_config))
        except (TypeError, ValueError, KeyError) as exc:
            raise ArtifactError(self.origin, f"invalid {arch} config: {exc}") from exc
        expected = sorted(tuple(int(d) for d in w.shape) for w in model.weights)
        try:
            found = _h5_shapes(self.weights_path)
        except OSError as exc:
            raise ArtifactError(self.origin, f"cannot read {WEIGHTS_NAME}: {exc}") from exc
        if found != expected:  # checked first: keras silently skips surplus arrays in the file
            problem = f"file holds {len(found)} arrays, network {len(expected)} (or shapes differ)"
            raise ArtifactError(self.origin, f"weights do not fit {arch!r}: {problem}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.load_weights(self.weights_path)
        except Exception as exc:  # keras raises many types for a file that does not fit
            brief = " ".join(str(exc).split())[:200]
            raise ArtifactError(self.origin, f"weights do not fit {arch!r}: {brief}") from exc
        return model


def _network_only(model: Any) -> Any:
    """``model`` without its optimizer: Keras 3 writes a compiled model's optimizer state into
    ``save_weights`` files, which would bloat the artifact and no longer fit the bare network."""
    if getattr(model, "optimizer", None) is None:
        return model
    import keras

    # a new functional model over the same layers: same variables and names, no optimizer
    # (``clone_model`` would keep the compile state)
    return keras.Model(model.inputs, model.outputs, name=model.name)


def save_artifact(model: Any, out_dir: os.PathLike | str, manifest: dict[str, Any]) -> Path:
    """Write ``model`` and ``manifest`` as an artifact directory, atomically.

    Written into a temporary sibling folder, checksummed, then moved in place (``os.replace``);
    an existing artifact is moved aside first and deleted afterwards.

    Parameters
    ----------
    model : keras.Model
        Network whose weights are saved (``model.save_weights``).
    out_dir : path-like
        Artifact directory.  An existing artifact there is replaced; a non-empty directory that
        is not an artifact is refused.
    manifest : dict
        ``model.json`` without ``format``, ``format_version`` and ``files``, which are filled in;
        ``created`` defaults to now (UTC) and ``training`` to ``{}``.

    Returns
    -------
    Path
        The artifact directory (absolute).
    """
    out = Path(out_dir).absolute()
    if out.exists() and not (out / MANIFEST_NAME).is_file():
        if not out.is_dir() or any(out.iterdir()):
            problem = "exists and is not a model artifact; refusing to overwrite"
            raise ArtifactError(out, problem, ExitCode.CANT_CREATE)
    # deep copy through JSON: tuples become lists, numpy values plain numbers, paths strings
    plain = lambda obj: obj.tolist() if hasattr(obj, "tolist") else str(obj)  # noqa: E731
    full = json.loads(json.dumps(manifest, default=plain))
    full.update(format=FORMAT, format_version=FORMAT_VERSION)
    full.setdefault("created", datetime.now(UTC).isoformat(timespec="seconds"))
    full.setdefault("training", {})
    full["files"] = {WEIGHTS_NAME: "0" * 64}  # placeholder: validate before writing anything
    if problem := manifest_problem(full):
        raise ArtifactError(out, f"invalid manifest: {problem}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; an artifact is meant to be shared
    old: Path | None = None
    try:
        _network_only(model).save_weights(tmp / WEIGHTS_NAME)
        full["files"] = {WEIGHTS_NAME: sha256_file(tmp / WEIGHTS_NAME)}
        text = json.dumps(full, indent=2, allow_nan=False) + "\n"
        (tmp / MANIFEST_NAME).write_text(text, encoding="utf-8")
        if out.exists():  # rename(2) cannot replace a non-empty directory: move it aside
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / out.name)
        os.replace(tmp, out)
    except BaseException:
        if old is not None and not out.exists():
            os.replace(old / out.name, out)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return out


def _extract(archive: Path) -> tempfile.TemporaryDirectory:
    """Unpack a .zip/.tar.gz into a new temporary folder, refusing members that escape it."""
    tmp = tempfile.TemporaryDirectory(prefix="lumbo_model-")
    try:
        if archive.name.endswith(".zip"):  # zipfile drops absolute paths and '..' itself
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(tmp.name)
        else:
            with tarfile.open(archive, "r:gz") as tf:
                tf.extractall(tmp.name, filter="data")
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as exc:
        tmp.cleanup()
        raise ArtifactError(archive, f"cannot extract archive: {exc}") from exc
    return tmp


def _artifact_root(extracted: Path) -> Path | None:
    """The folder holding model.json: the archive root or a top-level folder."""
    candidates = [extracted, *sorted(p for p in extracted.iterdir() if p.is_dir())]
    return next((c for c in candidates if (c / MANIFEST_NAME).is_file()), None)


def _read_manifest(root: Path, src: Path, verify: bool) -> dict[str, Any]:
    try:
        manifest = json.loads((root / MANIFEST_NAME).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ArtifactError(src, f"missing {MANIFEST_NAME}", ExitCode.NO_INPUT) from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(src, f"{MANIFEST_NAME} is not valid JSON ({exc})") from exc
    if problem := manifest_problem(manifest):
        raise ArtifactError(src, f"{MANIFEST_NAME}: {problem}")
    for name, digest in manifest["files"].items():
        if not (root / name).is_file():
            raise ArtifactError(src, f"missing file {name}", ExitCode.NO_INPUT)
        if verify and sha256_file(root / name) != digest.lower():
            problem = f"checksum mismatch for {name}: the file is corrupt or was changed"
            raise ArtifactError(src, problem)
    return manifest


def load_artifact(path: os.PathLike | str, verify: bool = True) -> ModelArtifact:
    """Open an artifact directory (or a ``.zip`` / ``.tar.gz`` of one) and validate it.

    Parameters
    ----------
    path : path-like
        Artifact directory or archive (extracted to a temporary folder).
    verify : bool
        Check the sha256 of every file listed in the manifest.

    Returns
    -------
    ModelArtifact

    Raises
    ------
    ArtifactError
        Missing directory or file, bad JSON, unknown format or too new ``format_version``,
        invalid manifest, unknown architecture, checksum mismatch.
    """
    src = Path(path).absolute()
    if src.is_dir():
        return ModelArtifact(src, _read_manifest(src, src, verify))
    if not (src.is_file() and src.name.endswith(ARCHIVE_SUFFIXES)):
        problem = "model artifact not found (expected a directory, .zip or .tar.gz)"
        raise ArtifactError(src, problem, ExitCode.NO_INPUT)
    tmp = _extract(src)
    try:
        root = _artifact_root(Path(tmp.name))
        if root is None:
            raise ArtifactError(src, f"archive holds no {MANIFEST_NAME}", ExitCode.NO_INPUT)
        return ModelArtifact(root, _read_manifest(root, src, verify), source=src, _tmp=tmp)
    except ArtifactError:
        tmp.cleanup()
        raise
