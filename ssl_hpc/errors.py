"""Errors the command line turns into a one-line message and a non-zero exit."""

import errno
import re


class SslHpcError(Exception):
    """Base class: a user-facing error whose message names the file, object or option."""


class ConfigError(SslHpcError):
    """A bad option, config key or value."""


class SurveyError(SslHpcError):
    """A survey directory, manifest or shard that is missing, corrupt or inconsistent."""


class TransientError(SslHpcError):
    """A read that failed on the filesystem's side (an I/O error, a stale handle on a
    parallel filesystem, too many open files): tried again, it may pass."""


class TransientReadError(SurveyError, TransientError):
    """A survey read that failed on the filesystem's side."""


#: errnos of a read that may pass when tried again
TRANSIENT_ERRNOS = frozenset(
    {errno.EIO, errno.ESTALE, errno.EMFILE, errno.ENFILE, errno.ETIMEDOUT, errno.EAGAIN}
)


def is_transient(cause: BaseException) -> bool:
    """Whether `cause`'s errno says the filesystem failed, not the file (HDF5's own read
    errors carry it only in their text, as "errno = 5")."""
    number = getattr(cause, "errno", None)
    if number is None:
        found = re.search(r"errno = (\d+)", str(cause))
        number = int(found.group(1)) if found else None
    return number in TRANSIENT_ERRNOS


def read_error(message: str, cause: Exception) -> SurveyError:
    """A SurveyError for a read that failed with `cause`: a TransientReadError when the
    read may pass tried again (`is_transient`). Its class, not a __cause__, marks it,
    because torch's DataLoader re-raises a worker's error as a new one of the same class."""
    return (TransientReadError if is_transient(cause) else SurveyError)(message)


class IngestError(SslHpcError):
    """A catalogue row or cutout file that cannot be ingested."""


class CheckpointError(SslHpcError):
    """No checkpoint of a run can be trusted (every one kept is truncated or damaged)."""


class DiskFullError(SslHpcError):
    """An output could not be written: its filesystem is full (or the quota spent)."""


class DivergedError(SslHpcError):
    """Training produced a non-finite loss (a NaN or inf pixel, or too high a rate)."""
