"""Running a model over a tile plan: the chunk tasks (accumulate, finish), the one Dask graph
builder used by the batch run and the lazy accessor alike, schedulers and clusters, and the
engines (torch and ONNX behind one format switch). May import everything below it: geometry,
models, bundle, scene, tiling, store.
"""
