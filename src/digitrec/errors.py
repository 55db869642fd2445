"""Exception types: every expected failure is a :class:`DigitrecError` with a one-line message."""

from __future__ import annotations

__all__ = [
    "DigitrecError", "DatasetError", "ModelFileError", "ImageError", "ConfigError", "DistributedError", "first_line",
]


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (or its type name), for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class DigitrecError(Exception):
    """Base class for errors that users can cause and fix (bad files, bad settings)."""


class DatasetError(DigitrecError):
    """A dataset file is missing, malformed, truncated, or fails its checksum."""


class ModelFileError(DigitrecError):
    """A model file is missing, corrupt, or not a digitrec model."""


class ImageError(DigitrecError):
    """An input image cannot be read or has no usable content."""


class DistributedError(DigitrecError):
    """A distributed run could not start or lost a process (rendezvous, a rank that died)."""


class ConfigError(DigitrecError, ValueError):
    """A setting has a value outside its allowed range."""
