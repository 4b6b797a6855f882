"""The segmentation service (``geoseg serve``): an HTTP API and a web page that submit, track,
show and hand out prediction jobs. Jobs are the predict job of ``geoseg.runs`` (``predict`` for a
scene, ``predict_catalog`` for several), run by a runner process per job on a Dask cluster; jobs,
scenes and users live in a SQLite store in the data folder. A top layer beside ``cli``: it may
import every layer below (runs, outputs, catalog, scene, bundle...), never the CLI.
"""
