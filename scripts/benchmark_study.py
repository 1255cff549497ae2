#!/usr/bin/env python
"""How the participant level's cost grows with the size of a study.

Builds a study of N subjects from the bundled example dataset (its subjects copied under new
labels, with their manual masks: file links, no data duplicated), runs
``run.py STUDY OUT participant`` on it, then once more with everything cached, and reports per N:

- wall time, time per image, and the rerun's wall time (nothing to recompute);
- node work: the sum of the Nipype nodes' own run times (from the run's log file), and wall time
  divided by node work — what the scheduling, process and I/O overhead adds;
- peak resident memory of the whole process tree (the CLI and its Nipype workers, sampled from
  /proc every 0.2 s).

Usage: ``python scripts/benchmark_study.py [--subjects 1 10 50] [--nprocs 2] [--keep DIR]``
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATASETS = [REPO.parent / "shared" / "data" / "ds-spine-mini", REPO / "examples" / "ds-spine-mini"]
FINISHED = re.compile(r'\[Node\] Finished "[^"]+", elapsed time ([0-9.eE+-]+)s')


def build_study(source: Path, n_subjects: int, dest: Path) -> int:
    """``dest``: a BIDS dataset of ``n_subjects`` subjects cycling through those of ``source``
    (``sub-<orig>r<k>``); images and masks are symlinks. Returns the number of images."""
    originals = sorted(p.name.removeprefix("sub-") for p in source.glob("sub-*") if p.is_dir())
    dest.mkdir(parents=True)
    for name in ("dataset_description.json", "README"):
        if (source / name).exists():
            shutil.copy(source / name, dest / name)
    images = 0
    for k in range(n_subjects):
        orig = originals[k % len(originals)]
        new = f"{orig}r{k:03d}"
        for root in (source, source / "derivatives" / "labels"):
            for path in sorted((root / f"sub-{orig}").rglob("*")):
                if path.is_dir():
                    continue
                rel = Path(str(path.relative_to(root)).replace(f"sub-{orig}", f"sub-{new}"))
                target = dest / root.relative_to(source) / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(path.resolve())
                images += root == source and path.name.endswith((".nii", ".nii.gz"))
    labels_description = source / "derivatives" / "labels" / "dataset_description.json"
    if labels_description.exists():
        shutil.copy(labels_description, dest / "derivatives" / "labels" / "dataset_description.json")
    return images


def _tree_rss_bytes(root_pid: int) -> int:
    """Resident memory of ``root_pid`` and all its descendants (from /proc)."""
    parents, rss = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(child for child, parent in parents.items() if parent == pid)
    return total


def run_measured(cmd: list[str]) -> tuple[float, int]:
    """Run ``cmd``; (wall seconds, peak tree RSS bytes). Fails loudly when the run fails."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = [0]

    def sample():
        while proc.poll() is None:
            peak[0] = max(peak[0], _tree_rss_bytes(proc.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - start
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-2000:]}")
    return wall, peak[0]


def node_work_seconds(work_dir: Path) -> float:
    """Sum of the nodes' run times in the newest log of ``work_dir/logs``."""
    log = max((work_dir / "logs").glob("*.log"), key=lambda p: p.stat().st_mtime)
    return sum(float(m.group(1)) for m in FINISHED.finditer(log.read_text(errors="replace")))


def benchmark(n_subjects: int, nprocs: int, root: Path) -> dict:
    source = next(d for d in DATASETS if (d / "dataset_description.json").is_file())
    study, out, work = root / f"study{n_subjects}", root / f"out{n_subjects}", root / f"work{n_subjects}"
    images = build_study(source, n_subjects, study)
    cmd = [sys.executable, str(REPO / "run.py"), str(study), str(out), "participant", "-w", str(work),
           "--skip-bids-validation", "--nprocs", str(nprocs)]  # fmt: skip
    wall, rss = run_measured(cmd)
    work_s = node_work_seconds(work)
    rerun, rerun_rss = run_measured(cmd)
    return {"subjects": n_subjects, "images": images, "wall_s": wall, "per_image_s": wall / images, "node_work_s": work_s,
            "wall_over_work": wall / work_s, "rerun_s": rerun, "peak_rss_gib": max(rss, rerun_rss) / 2**30}  # fmt: skip


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="keep the studies and outputs in this folder")
    args = parser.parse_args(argv)
    root = args.keep or Path(tempfile.mkdtemp(prefix="lumbo_study_"))
    print(f"# {os.cpu_count()} CPUs, --nprocs {args.nprocs}; studies in {root}", flush=True)
    header = ("subjects", "images", "wall_s", "per_image_s", "node_work_s", "wall_over_work", "rerun_s", "peak_rss_gib")
    print("\t".join(header), flush=True)
    try:
        for n in args.subjects:
            row = benchmark(n, args.nprocs, root)
            print("\t".join(f"{row[k]:.2f}" if isinstance(row[k], float) else str(row[k]) for k in header), flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
