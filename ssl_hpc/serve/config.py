"""What `ssl-hpc serve` serves and how."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from ..errors import SslHpcError
from ..search.searcher import SearchConfig

MIN_TOKEN = 16  # characters of a token the user chooses


@dataclass(frozen=True)
class ServeConfig:
    """The web page's address, limits and search settings."""

    host: str = "127.0.0.1"
    """address to bind: the login node's loopback unless asked otherwise"""
    port: int = 8000
    """port (0: any free one)"""
    max_upload_mb: float = 8.0
    """largest FITS upload, MiB"""
    token: str | None = None
    """the token every request must carry (?token=, then a cookie; or an Authorization
    header); unset: a random one, printed in the URL at start"""
    no_token: bool = False
    """serve without a token: anyone who can reach the port (every user of a shared login
    node, even on 127.0.0.1) can use it"""
    report: str | None = None
    """an ssl-hpc report directory: trust and anomaly scores from it (else computed)"""
    search: SearchConfig = field(default_factory=SearchConfig)

    def __post_init__(self) -> None:
        if not 0 <= self.port < 65536:
            raise SslHpcError(f"port {self.port}: expected 0..65535")
        if self.token is not None and len(self.token) < MIN_TOKEN:
            raise SslHpcError(f"token: at least {MIN_TOKEN} characters (unset: a random one)")
        if self.token is not None and self.no_token:
            raise SslHpcError("token and no_token: give one or the other")
        if self.max_upload_mb <= 0:
            raise SslHpcError(f"max_upload_mb {self.max_upload_mb}: must be > 0")

    def access_token(self) -> str | None:
        """The token to require: the configured one, a fresh random one, or None when
        `no_token` was asked for."""
        if self.no_token:
            return None
        return self.token or secrets.token_urlsafe(24)
