"""Profiles: named sets of overrides inside a pipeline step (e.g. ``smoke`` and ``full``).

::

    - type: train
      profile: smoke            # the default; `geoseg train --profile full` picks another
      model: {architecture: farseg}
      profiles:
        smoke: {steps: 60, batch: 4, sampling: {window: 128}}
        full: {recipe: farseg, catalog: ../catalogs/isaid.yaml}

A profile is merged over the step's own keys (nested mappings merge, other values replace);
the result is validated as strictly as the step itself, at load time for every profile.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, Field, PrivateAttr, ValidationError, model_validator

from geoseg.config import format_validation_error
from geoseg.errors import ConfigError
from geoseg.training.config import deep_merge

STEP_KEYS = {"type", "name", "profile", "profiles"}


class Profiled(BaseModel):
    """Mixin for steps: ``profile`` + ``profiles``; ``config()`` gives the effective settings."""

    config_class: ClassVar[Any]
    profile: str | None = Field(None, description="profile applied by default")
    profiles: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="named overrides of this step's keys")
    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)
    _overrides: dict[str, Any] = PrivateAttr(default_factory=dict)
    #: run-time options that are not settings (e.g. stop_after for time-sliced jobs)
    _session: dict[str, Any] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _keep_raw(cls, data: Any, handler: Any) -> Any:
        obj = handler(data)
        if isinstance(data, dict):
            obj._raw = {k: v for k, v in data.items() if k not in STEP_KEYS}
            try:
                obj.validate_profiles()
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return obj

    @model_validator(mode="after")
    def _check_profiles(self) -> Profiled:
        if self.profile is not None and self.profile not in self.profiles:
            raise ValueError(f"profile {self.profile!r} is not defined; profiles: "
                             f"{sorted(self.profiles) or 'none'}")  # fmt: skip
        for name, over in self.profiles.items():
            bad = sorted(STEP_KEYS & set(over))
            if bad:
                raise ValueError(f"profile {name!r} cannot set {bad[0]!r}")
        return self

    def validate_profiles(self) -> None:
        """Build every profile once so a typo in any of them fails at load time."""
        for name in self.profiles:
            self.config(name)

    def with_profile(self, profile: str | None, overrides: dict[str, Any] | None = None,
                     session: dict[str, Any] | None = None) -> Any:  # fmt: skip
        """A copy using ``profile`` (None: the step's default) plus explicit overrides."""
        if profile is not None and profile not in self.profiles:
            raise ConfigError(f"step {getattr(self, 'name', '?')!r} has no profile {profile!r}; "
                              f"it has {sorted(self.profiles) or 'none'}")  # fmt: skip
        copy = self.model_copy(update={"profile": profile or self.profile})
        copy._raw = dict(self._raw)
        copy._overrides = dict(overrides or {})
        copy._session = dict(session or {})
        return copy

    def config(self, profile: str | None = None) -> Any:
        """The effective settings: own keys, then the profile, then overrides."""
        name = profile or self.profile
        data = dict(self._raw)
        if name is not None:
            data = deep_merge(data, self.profiles[name])
        data = deep_merge(data, self._overrides)
        try:
            return self.config_class.model_validate(data)
        except ValidationError as exc:
            where = f"profile {name!r}: " if name else ""
            msg = format_validation_error(exc, model=self.config_class, data=data)
            raise ConfigError(f"{where}{msg}") from None
