"""Errors a user can cause. The CLI prints their one-line message (traceback only with --debug)."""


class DmlkitError(Exception):
    """Base class of every user-facing dmlkit error."""


class ConfigError(DmlkitError):
    """A config key, value or type is wrong."""


class DataError(DmlkitError):
    """A dataset is missing, has the wrong layout, or holds unreadable files."""


class CheckpointError(DmlkitError):
    """A checkpoint or run directory is missing, truncated or incompatible."""


class EvaluationError(DmlkitError):
    """Embeddings or labels given to the evaluator are invalid."""


class TrainingError(DmlkitError):
    """Training cannot continue (for example a non-finite loss)."""
