"""Jobs users start: the predict options (one model shared by CLI, pipelines and evaluation),
the predict job (plan -> compute chunks -> write outputs -> report) and batch runs over
catalogs. May import every layer below: inference, outputs, store, catalog, scene, bundle.
"""
