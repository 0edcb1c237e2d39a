"""Typed error hierarchy: every message names the input, what was received and what was expected."""


class VitrinaError(Exception):
    """Base class of every error vitrina raises on purpose."""


class DataValidationError(VitrinaError, ValueError):
    """Input data is malformed: the message names the file, row and field."""


class DatasetNotFoundError(VitrinaError, FileNotFoundError):
    """A named dataset is not under the data home; the message says how to get it."""


class ConfigError(VitrinaError, ValueError):
    """A model, split or benchmark parameter is unknown or out of range."""


class NotFittedError(VitrinaError, RuntimeError):
    """A model was asked to recommend before ``fit``."""


class ModelLoadError(VitrinaError, ValueError):
    """A saved model directory is missing, truncated, tampered with or of another version."""
