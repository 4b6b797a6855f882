"""Model registry and architectures. Importing this package registers every architecture."""

from geoseg.models import smp_models, tiny  # noqa: F401  (registers unet, deeplabv3plus, tinycnn)
from geoseg.models import deeptrinet, farseg, hpclnet, timf  # noqa: F401  (the seed models)
from geoseg.models.base import SegModel
from geoseg.models.registry import create, get_model_class, list_models, register

__all__ = ["SegModel", "create", "get_model_class", "list_models", "register"]
