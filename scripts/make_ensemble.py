#!/usr/bin/env python3
"""Join segmentation models trained by one recipe with different seeds into one ensemble artifact.

The ensemble (:mod:`lumbo_bids.model.architectures`) averages its members' probabilities; every part of
the app takes it like a single network (``participant --model``, ``group --init-model``). Its model
card keeps each member's card (training command, seed, time) and checksum, and the command that
joined them, so the recipe stays reproducible: train the members with
``scripts/train_base_model.py --seed N``, then::

    .venv/bin/python scripts/make_ensemble.py work/seed42/cord_seg work/seed43/cord_seg \\
        --overlap 0.25 --out work/ensemble/cord_seg

``--overlap`` sets the ensemble's sliding-window overlap: inference costs one forward pass per
member, and fewer windows win back part of it (measure with ``scripts/benchmark_inference.py``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LOGGER = logging.getLogger("make_ensemble")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("members", type=Path, nargs="+", help="member artifact folders (cord_seg), same recipe")
    parser.add_argument("--out", type=Path, required=True, help="ensemble artifact folder to write")
    parser.add_argument("--overlap", type=float, help="sliding-window overlap of the ensemble (default: the members')")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    from lumbo_bids.errors import LumboError
    from lumbo_bids.training.ensembles import ensemble_artifact

    if args.overlap is not None and not 0.0 <= args.overlap < 1.0:
        parser.error(f"--overlap must be in [0, 1), got {args.overlap}")
    reproduce = " ".join(["scripts/make_ensemble.py", *(sys.argv[1:] if argv is None else argv)])
    try:
        out = ensemble_artifact(args.members, args.out, overlap=args.overlap, reproduce=reproduce)
    except LumboError as exc:
        LOGGER.error("%s", exc)
        return int(exc.code)
    LOGGER.info("wrote %s (%d members)", out, len(args.members))
    return 0


if __name__ == "__main__":
    sys.exit(main())
