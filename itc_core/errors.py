"""Exceptions a user can cause and fix. The CLI prints their message on one line and exits non-zero."""

__all__ = ["ItcError", "ConfigError", "ImageReadError", "WeightsError"]


class ItcError(Exception):
    """Base of every error caused by input, files or configuration (not by a bug)."""


class ConfigError(ItcError, ValueError):
    """Unknown preset, unknown config key or invalid value."""


class ImageReadError(ItcError):
    """A file that is missing or is not a readable image."""


class WeightsError(ItcError):
    """Missing, unreadable or mismatching model weights."""
