"""geoseg.outputs.vectors, the one import of outside callers: it exposes the public names of
the vector modules."""

from __future__ import annotations

from geoseg.geometry import area
from geoseg.outputs import polygonize, stream, vectors, write


def test_vectors_reexports_the_public_names() -> None:
    assert vectors.polygonize is polygonize.polygonize
    assert vectors.polygonize_to_file is stream.polygonize_to_file
    assert vectors.write_vectors is write.write_vectors and vectors.FORMATS is write.FORMATS
    assert vectors.ground_area is area.ground_area
