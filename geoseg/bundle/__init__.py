"""A trained model on disk: the strict JSON card (classes, modalities, normalisation), the bundle
(safetensors weights + card, digest), untrained bundles and the ONNX export. May import the
foundation, geometry, models and scene.
"""
