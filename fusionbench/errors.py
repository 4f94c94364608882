"""Errors a user can cause.

Every error a user can trigger with a config, a file or a command-line argument is a
``FusionbenchError``. Its message names the file, key or value at fault and how to fix it;
the CLI prints it without a traceback and exits with status 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations


class FusionbenchError(Exception):
    """Base class for errors caused by user input (config, files, arguments)."""

    exit_code = 2


class ConfigError(FusionbenchError):
    """An experiment config is missing, malformed, or has an unknown key or a wrong type."""


class RegistryError(FusionbenchError):
    """A component name is unknown, or a name is registered twice."""


class DataError(FusionbenchError):
    """A dataset, annotation or image file cannot be used as given."""


class ScoreInputError(FusionbenchError):
    """Predictions or references given to the scorer are malformed or do not match."""


class MetricUnavailableError(FusionbenchError):
    """A metric's runtime requirement (Java, jars) is missing."""
