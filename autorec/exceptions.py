"""Every exception and warning a user of autorec can catch, in one place.

Nothing here imports the rest of the library, so any module can raise these.
"""
from __future__ import annotations

__all__ = [
    "DataError", "ChecksumError", "DownloadError", "ModelFileError", "NotFittedError",
    "NotFittedForUser", "TrainingDiverged", "DistributedError", "ExportInProgress", "SplitWarning",
]


class DataError(ValueError):
    """Bad input data: the message names the file, line/column or value at fault."""


class ChecksumError(DataError):
    """An archive's digests match neither the published archive nor its known contents."""


class DownloadError(DataError):
    """A download failed (HTTP error, connection problem, truncated transfer)."""


class ModelFileError(ValueError):
    """A model or checkpoint file is unreadable, inconsistent or of another format.

    The message names the file and what is wrong with it.
    """


class NotFittedError(RuntimeError):
    """The model is used before ``fit``."""


class NotFittedForUser(ValueError):
    """The model cannot score a user it did not see in training (e.g. I-AutoRec)."""


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite; the model keeps its last good state."""


class DistributedError(RuntimeError):
    """A distributed job failed as a whole: a rank died, hung past the timeout, or the ranks
    disagree (other data, other random draws). Every rank that notices raises it."""


class ExportInProgress(RuntimeError):
    """Another export is writing the same file right now (it holds the file's lock)."""


class SplitWarning(UserWarning):
    """Some users could not be split as asked (too few ratings); the message counts them."""
