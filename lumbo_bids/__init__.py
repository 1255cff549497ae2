"""lumbo_bids: a BIDS App segmenting the spinal cord, built for the lumbosacral cord."""

__version__ = "0.1.0"
__all__ = ["__version__"]
