"""Errors the user can fix. The CLI prints their message on one line and exits non-zero.

Every message names the thing at fault (a file, an archive entry, a config key) and, where
there is one, what to do about it.
"""


class MaskDepthError(Exception):
    """Base class: a problem with the user's input, not a bug in maskdepth."""


class ConfigError(MaskDepthError):
    """Unknown config key, wrong value type, or an invalid combination of settings."""


class DataError(MaskDepthError):
    """A dataset problem: missing or corrupt archive entry, bad pairing, wrong size or range."""


class CheckpointError(MaskDepthError):
    """A checkpoint that is missing, unreadable, or belongs to another architecture."""


class DiskFullError(MaskDepthError):
    """The disk (or the Drive quota) filled up while writing a file; the previous file is kept."""


class RunLockedError(MaskDepthError):
    """Another live process is training in the same run directory."""


class TrainingError(MaskDepthError):
    """Training cannot go on (e.g. the loss became NaN); the last good checkpoint is kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C / the notebook's Stop button stopped training after last.pt was saved with the
    position; the message says where, and rerunning the same command continues from there.
    A KeyboardInterrupt, so code that does not know it still treats it as Ctrl-C."""
