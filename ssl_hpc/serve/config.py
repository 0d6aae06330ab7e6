"""What `ssl-hpc serve` serves and how."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import SslHpcError
from ..search.searcher import SearchConfig


@dataclass(frozen=True)
class ServeConfig:
    """The web page's address, limits and search settings."""

    host: str = "127.0.0.1"
    """address to bind: the login node's loopback unless asked otherwise"""
    port: int = 8000
    """port (0: any free one)"""
    max_upload_mb: float = 8.0
    """largest FITS upload, MiB"""
    report: str | None = None
    """an ssl-hpc report directory: trust and anomaly scores from it (else computed)"""
    search: SearchConfig = field(default_factory=SearchConfig)

    def __post_init__(self) -> None:
        if not 0 <= self.port < 65536:
            raise SslHpcError(f"port {self.port}: expected 0..65535")
        if self.max_upload_mb <= 0:
            raise SslHpcError(f"max_upload_mb {self.max_upload_mb}: must be > 0")
