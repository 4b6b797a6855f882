"""The ``geoseg`` command: one module per command group (predict, model, catalog, train), shared
predict options generated from :class:`~geoseg.runs.options.PredictOptions`, geoseg errors
translated to one-line messages naming the flag, exit code 2.
"""
