"""Exceptions a user can cause and fix.

The CLI prints their message on one line (``itc: error: …``) and exits with status 2.
"""

__all__ = ["ItcError", "ConfigError", "ImageReadError", "ImageSizeError", "WeightsError"]


class ItcError(Exception):
    """Base of every error caused by input, files or configuration (not by a bug)."""


class ConfigError(ItcError, ValueError):
    """Unknown preset, unknown config key or invalid value."""


class ImageReadError(ItcError):
    """A file that is missing or is not a readable image."""


class ImageSizeError(ItcError, ValueError):
    """An image whose size itc does not code (``bitstream.MAX_SIDE``, ``bitstream.MAX_PIXELS``).

    Also a ``ValueError``, the type ``bitstream.header`` raised for sizes before this class existed.
    """


class WeightsError(ItcError):
    """Missing, unreadable or mismatching model weights."""
