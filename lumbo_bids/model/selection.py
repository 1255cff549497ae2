"""Which models a run uses: the segmentation artifact (with its preprocessing plan) and the localiser."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidInputError, MissingInputError, OutputError, named
from ..plan import ModelPlan

LOGGER = logging.getLogger("lumbo_bids.model")

SHIPPED_MODELS = Path(__file__).resolve().parents[1] / "data" / "models"
SHIPPED_SEGMENTATION = SHIPPED_MODELS / "cord_seg"
SHIPPED_LOCALISER = SHIPPED_MODELS / "cord_localiser"
# SCT's centerline models by contrast (deepseg_sc's ``*_ctr.h5``)
SCT_CTR_FILES = {"T2w": "t2_ctr.h5", "T1w": "t1_ctr.h5", "T2starw": "t2s_ctr.h5", "dwi": "dwi_ctr.h5"}


@dataclass(frozen=True)
class SegmentationModel:
    """What the workflow needs to know of a segmentation artifact (read once, at build time)."""

    path: Path
    name: str
    version: str
    checksum: str
    plan: ModelPlan
    localiser: dict | None = None  # the manifest's "localiser" entry: a fine-tuned localiser in a sub-folder

    @property
    def contrasts(self) -> tuple[str, ...]:
        return self.plan.contrasts


@dataclass(frozen=True)
class ModelChoice:
    segmentation: SegmentationModel
    localiser: str
    localiser_checksum: str
    localiser_name: str


def unpack_model(path: Path | None, work_dir: Path) -> Path | None:
    """A model folder as it is; an archive unpacked once into ``WORK/models/<sha256>``.

    The folder outlives the run (the workflow's nodes read it, reruns reuse it and its path, so
    Nipype's cache): unlike :func:`~lumbo_bids.model.artifact.load_artifact`'s temporary folder,
    which is deleted when the loaded artifact is.
    """
    from .artifact import ARCHIVE_SUFFIXES, load_artifact, sha256_file
    from .manifest import MANIFEST_NAME

    if path is None or not (path.is_file() and path.name.endswith(ARCHIVE_SUFFIXES)):
        return path
    target = work_dir / "models" / sha256_file(path)[:16]
    if not (target / MANIFEST_NAME).is_file():
        artifact = load_artifact(path)  # extracts to a temporary folder and verifies it
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            shutil.copytree(artifact.path, staging, dirs_exist_ok=True)
            os.replace(staging, target)  # fails if another run unpacked it meanwhile: fine
        except OSError as exc:
            if not (target / MANIFEST_NAME).is_file():
                raise OutputError(f"{path}: cannot unpack into {target}: {exc.strerror}") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    LOGGER.info("%s: unpacked into %s", path, target)
    return target


def read_segmentation_model(path: Path | None) -> SegmentationModel:
    """Load and verify a segmentation artifact (default: the shipped one)."""
    from .artifact import load_artifact

    path = Path(path) if path is not None else SHIPPED_SEGMENTATION
    artifact = load_artifact(path)  # ArtifactError is a LumboError: one line, exit 65/66
    manifest = artifact.manifest
    if manifest.get("task") != "segmentation":
        raise InvalidInputError(f"{path}: a {manifest.get('task')!r} model, not a segmentation model")
    return SegmentationModel(
        path=artifact.path,
        name=manifest.get("name", path.name),
        version=str(manifest.get("version", "")),
        checksum=artifact.checksum,
        plan=artifact.plan,
        localiser=manifest.get("localiser"),
    )


def bundled_localiser(segmentation: SegmentationModel) -> tuple[str, str, str] | None:
    """(path, checksum, description) of the localiser that a segmentation artifact carries
    (``"localiser": {"path": "localiser", "sha256": ...}``, written by the group level), or None."""
    from .artifact import load_artifact

    entry = segmentation.localiser
    if not entry:
        return None
    where = str(segmentation.path)
    if not (isinstance(entry, dict) and isinstance(entry.get("path"), str) and isinstance(entry.get("sha256"), str)):
        raise InvalidInputError(f"{where}: 'localiser' must name a sub-folder ('path') and its weights' 'sha256'")
    path = (segmentation.path / entry["path"]).resolve()
    if segmentation.path.resolve() not in path.parents:
        raise InvalidInputError(f"{where}: its localiser {entry['path']!r} is not inside the model folder")
    artifact = load_artifact(path)  # missing or corrupt: one line, exit 65/66
    if artifact.manifest.get("task") != "localisation":
        raise InvalidInputError(f"{where}: {path} is a {artifact.manifest.get('task')!r} model, not a localiser")
    if artifact.checksum != entry["sha256"]:
        raise InvalidInputError(f"{where}: {path} is not the localiser the model was saved with (sha256 differs)")
    return (
        str(path),
        artifact.checksum,
        f"lumbo_bids {artifact.manifest.get('name', 'localiser')}, bundled with the segmentation model",
    )


def choose_localiser(
    contrast: str, sct_models: Path | None, segmentation: SegmentationModel | None = None
) -> tuple[str, str, str]:
    """(path, checksum, description) of the cord localiser for ``contrast``.

    SCT's ``*_ctr.h5`` when ``--sct-models`` holds one for this contrast (T2w's otherwise,
    with a warning); else the localiser bundled with the segmentation model (a group level's
    fine-tuned one, :func:`bundled_localiser`); else the shipped localiser artifact.
    """
    from .artifact import load_artifact, sha256_file

    if sct_models is not None:
        wanted = sct_models / SCT_CTR_FILES.get(contrast, "t2_ctr.h5")
        if not wanted.is_file():
            fallback = sct_models / "t2_ctr.h5"
            if not fallback.is_file():
                what = f"{wanted.name} not" if wanted == fallback else f"neither {wanted.name} nor {fallback.name}"
                raise MissingInputError(f"{sct_models}: {what} found")
            LOGGER.warning("%s: no %s for %s images, using %s", sct_models, wanted.name, contrast, fallback.name)
            wanted = fallback
        return str(wanted), sha256_file(wanted), f"SCT {wanted.name}"
    if segmentation is not None and (bundled := bundled_localiser(segmentation)) is not None:
        return bundled
    artifact = load_artifact(SHIPPED_LOCALISER)
    return str(artifact.path), artifact.checksum, f"lumbo_bids {artifact.manifest.get('name', 'localiser')}"


def choose_models(config, contrast: str, needs_localiser: bool = True) -> ModelChoice:
    """Models for one image of ``contrast`` (artifacts are verified here, before any work)."""
    segmentation = read_segmentation_model(config.model)
    check_contrast(segmentation, contrast)
    if needs_localiser:
        localiser, checksum, description = choose_localiser(contrast, config.sct_models, segmentation)
    else:
        localiser, checksum, description = "", "", "not needed (manual mask)"
    return ModelChoice(segmentation, localiser, checksum, description)


def check_contrast(segmentation: SegmentationModel, contrast: str) -> None:
    """Refuse an image of a contrast the model was not made for."""
    if segmentation.contrasts and contrast not in segmentation.contrasts:
        raise InvalidInputError(
            f"{segmentation.path} supports {', '.join(segmentation.contrasts)}, not {contrast}: "
            "restrict the inputs with --bids-filter-file",
        )


def _build_networks(path: str) -> None:
    """Build the network of the artifact at ``path`` (a folder or an archive, kept extracted
    meanwhile) and of its bundled localiser, loading their weights (in a throwaway process: see
    :func:`check_networks`); an :class:`ArtifactError` travels back to the caller."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)  # TensorFlow's start-up lines: this process says nothing else
    from .artifact import load_artifact

    artifact = load_artifact(path)
    artifact.build_model()
    entry = artifact.manifest.get("localiser")
    if isinstance(entry, dict) and isinstance(entry.get("path"), str):  # checked by bundled_localiser
        load_artifact(artifact.path / entry["path"]).build_model()


def check_networks(path: Path | None) -> None:
    """Refuse, before any work, a ``--model`` whose weights do not fit its network: the network
    (and its bundled localiser's) is built and its weights loaded (one line, exit 65), not per
    image after preprocessing.

    This runs in a spawned process: TensorFlow must not start in the main process, whose Nipype
    workers are forked from it. The shipped model needs no check (its checksum is verified and
    the test suite builds it)."""
    import concurrent.futures
    import multiprocessing

    if path is None or Path(path).resolve() == SHIPPED_SEGMENTATION.resolve():
        return
    from .artifact import ArtifactError

    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            pool.submit(_build_networks, str(path)).result()  # an ArtifactError is raised here
        except concurrent.futures.process.BrokenProcessPool:
            raise ArtifactError(path, "its network could not be built (the process checking it died)") from None


def check_models(config, inputs: dict) -> None:
    """Verify every model the run will need, before any work; an error names the option that
    gave the model (``--model``, ``--sct-models``)."""
    needs = {(anat.contrast, anat.mask is None or config.ignore_manual_centerline) for anats in inputs.values() for anat in anats}
    with named("--model"):
        segmentation = read_segmentation_model(config.model)
        bundled_localiser(segmentation)
        check_networks(config.model)
        for contrast in sorted({contrast for contrast, _ in needs}):
            check_contrast(segmentation, contrast)
    for contrast in sorted({contrast for contrast, needs_localiser in needs if needs_localiser}):
        with named("--sct-models") if config.sct_models is not None else contextlib.nullcontext():
            choose_localiser(contrast, config.sct_models, segmentation)
