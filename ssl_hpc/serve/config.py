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
    max_uploads: int = 2
    """uploads embedded at once; more get 503 (each one runs the encoder on the CPU)"""
    request_timeout_s: float = 60.0
    """a request still unanswered after this long gets 504"""
    max_connections: int = 64
    """open connections; more get 503 (uvicorn's limit_concurrency)"""
    image_cache_mb: float = 64.0
    """rendered cutout PNGs kept in memory, MiB"""
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
        for name in ("max_upload_mb", "max_uploads", "request_timeout_s", "max_connections"):
            if getattr(self, name) <= 0:
                raise SslHpcError(f"{name} {getattr(self, name)}: must be > 0")
        if self.image_cache_mb < 0:
            raise SslHpcError(f"image_cache_mb {self.image_cache_mb}: must be >= 0")

    def limits(self) -> dict:
        """create_app's keyword arguments for this config's limits."""
        return {
            "max_upload_bytes": int(self.max_upload_mb * (1 << 20)),
            "max_uploads": self.max_uploads,
            "request_timeout_s": self.request_timeout_s,
        }

    def access_token(self) -> str | None:
        """The token to require: the configured one, a fresh random one, or None when
        `no_token` was asked for."""
        if self.no_token:
            return None
        return self.token or secrets.token_urlsafe(24)
