"""Errors the command line turns into a one-line message and a non-zero exit."""


class SslHpcError(Exception):
    """Base class: a user-facing error whose message names the file, object or option."""


class ConfigError(SslHpcError):
    """A bad option, config key or value."""


class SurveyError(SslHpcError):
    """A survey directory, manifest or shard that is missing, corrupt or inconsistent."""


class IngestError(SslHpcError):
    """A catalogue row or cutout file that cannot be ingested."""


class CheckpointError(SslHpcError):
    """No checkpoint of a run can be trusted (every one kept is truncated or damaged)."""


class DiskFullError(SslHpcError):
    """An output could not be written: its filesystem is full (or the quota spent)."""


class DivergedError(SslHpcError):
    """Training produced a non-finite loss (a NaN or inf pixel, or too high a rate)."""
