"""Model registry and architectures. Importing this package registers every architecture."""

# importing registers: unet, deeplabv3plus (smp_models), tinycnn, sparsecnn, and the seed models
from geoseg.models import deeptrinet, farseg, hpclnet, smp_models, sparse_cnn, timf, tiny  # noqa: F401
from geoseg.models.base import SegModel
from geoseg.models.registry import create, get_model_class, list_models, register

__all__ = ["SegModel", "create", "get_model_class", "list_models", "register"]
