"""lumbo_bids: a BIDS App segmenting the spinal cord, built for the lumbosacral cord.

``lumbo_bids.segment(image, model=None, mask=None)`` segments one image from Python
(:mod:`lumbo_bids.api`); ``run.py`` / ``lumbo-bids`` is the BIDS App.
"""

__version__ = "0.1.0"
__all__ = ["__version__", "segment"]


def __getattr__(name: str):  # lazy: ``import lumbo_bids`` stays light (no nibabel, no TensorFlow)
    if name == "segment":
        from .api import segment

        return segment
    raise AttributeError(f"module 'lumbo_bids' has no attribute {name!r}")
