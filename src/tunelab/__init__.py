"""tunelab: turn a pretrained language model plus your data into a measured, exported, served specialist."""

__version__ = "0.1.0"
