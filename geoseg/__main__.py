"""``python -m geoseg``: the geoseg command."""

from geoseg.cli.main import main

main()
