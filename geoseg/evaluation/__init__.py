"""Scoring predictions against labels: confusion matrices and metrics, and the evaluation of a
bundle through the tiled predictor on held-out regions. May import runs (the predict job),
scene (labels), catalog, geometry and bundle.
"""
