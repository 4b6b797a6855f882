"""geoseg: semantic segmentation of huge remote-sensing scenes."""

__version__ = "0.1.0"

from geoseg import accessor as _accessor  # noqa: F401  (registers the .geoseg accessor)
