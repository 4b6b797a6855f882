"""geoseg: semantic segmentation of huge remote-sensing scenes.

The package follows the data's way (docs/architecture.md): ``geometry`` -> ``models`` ->
``bundle`` -> ``scene`` -> ``catalog`` -> ``tiling`` -> ``store`` -> ``inference`` ->
``outputs`` -> ``runs`` -> ``training`` / ``evaluation`` -> ``pipeline`` -> ``jupyter`` ->
``cli``; each layer imports only the ones before it. Importing this root loads nothing heavy:
``import geoseg.jupyter`` registers the ``.geoseg`` xarray accessor.
"""

__version__ = "0.1.0"
