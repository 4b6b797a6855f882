"""geoseg: semantic segmentation of huge remote-sensing scenes."""

__version__ = "0.1.0"
