"""lumbo_bids: a BIDS App segmenting the spinal cord, built for the lumbosacral cord.

``lumbo_bids.segment(image, model=None, mask=None)`` segments one image from Python
(:mod:`lumbo_bids.api`); ``run.py`` / ``lumbo-bids`` is the BIDS App.
"""

import os as _os

# TensorFlow runs its CPU convolutions through oneDNN only on CPUs with AVX-512 unless asked; on
# AVX2-only CPUs (AMD EPYC, older Xeons: many clusters) its own kernels make 3D training ~3x and
# segmentation ~2.5x slower (README, Benchmarks). Set before any TensorFlow import; a user's value wins.
_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"
__all__ = ["__version__", "segment"]


def __getattr__(name: str):  # lazy: ``import lumbo_bids`` stays light (no nibabel, no TensorFlow)
    if name == "segment":
        from .api import segment

        return segment
    raise AttributeError(f"module 'lumbo_bids' has no attribute {name!r}")
