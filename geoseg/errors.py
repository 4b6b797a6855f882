"""Exception hierarchy: one root, subclasses that also inherit the matching builtin.

Every message names the offending file or value and says how to fix it, because the CLI prints
the message as the last line of stderr and exits with code 2.
"""

from __future__ import annotations


class GeosegError(Exception):
    """Root of every error geoseg raises on purpose."""


class InputError(GeosegError, ValueError):
    """A scene, modality or option cannot be used as given."""


class GridError(InputError):
    """Rasters cannot be aligned on one grid (no CRS, no overlap, rotation...)."""


class BundleError(GeosegError, ValueError):
    """A model bundle is missing, corrupt, unsafe or inconsistent with the input."""


class ConfigError(GeosegError, ValueError):
    """A configuration or pipeline file is invalid."""


class ModelError(GeosegError, KeyError):
    """Unknown architecture or invalid model arguments."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class OutputError(GeosegError, OSError):
    """An output location cannot be written."""


class BusyError(GeosegError, RuntimeError):
    """Another process is working on the same run (it holds the run's lock).

    ``holder`` is the lock's owner (``geoseg.store.lock.LockOwner``: pid, host, command), or
    None when the lock file is damaged.
    """

    def __init__(self, message: str, holder: object = None) -> None:
        super().__init__(message)
        self.holder = holder

    def __reduce__(self):  # pickled across Dask workers and processes
        return (type(self), (str(self), self.holder))
