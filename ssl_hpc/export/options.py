"""What `ssl-hpc export` writes: the catalogue's format and which columns it carries."""

from __future__ import annotations

from dataclasses import dataclass

from ..data.healpix import MAX_ORDER
from ..errors import ConfigError

FORMATS = ("parquet", "fits", "hats")


@dataclass(frozen=True)
class ExportOptions:
    """The catalogue `ssl-hpc export` writes from an embedding set."""

    format: str = "parquet"
    """parquet (one file, or a directory of part files above part_rows rows), fits (one
    binary table, for TOPCAT) or hats (a HEALPix-partitioned collection LSDB opens)"""
    pca: int | None = None
    """principal components as columns pca_0, pca_1, ... (the set's pca.npz); none: as
    many as it has, 0: no such columns"""
    vectors: bool = True
    """the whole representation as one array column, embedding (4 bytes per dimension per
    row: 8 kB at 2048 dims); false for a light table of positions and scores"""
    healpix_order: int | None = None
    """order of the healpix column (nested); none: the survey's own partition order if
    its manifest records one, else 4 (nside 16, as Multimodal Universe)"""
    part_rows: int = 2_000_000
    """Parquet: above this many rows, CAT is a directory of part files of about this many
    rows each"""
    margin_arcsec: float = 5.0
    """HATS: width of the margin catalogue that lets crossmatches near partition edges find
    their pairs"""

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ConfigError(f"format {self.format!r}: expected one of {FORMATS}")
        if self.pca is not None and self.pca < 0:
            raise ConfigError(f"pca {self.pca}: expected >= 0 (0: no components)")
        if self.healpix_order is not None and not 0 <= self.healpix_order <= MAX_ORDER:
            raise ConfigError(f"healpix_order {self.healpix_order}: expected 0..{MAX_ORDER}")
        if self.part_rows < 1 or self.margin_arcsec <= 0:
            raise ConfigError(
                f"part_rows {self.part_rows}, margin_arcsec {self.margin_arcsec}: must be > 0"
            )
