"""Catalogues people open: an embedding set, its positions and its results as Parquet
(pandas, polars), a FITS binary table (TOPCAT) or a HATS collection (LSDB)."""

from .catalogue import export_catalogue
from .options import FORMATS, ExportOptions

__all__ = ["FORMATS", "ExportOptions", "export_catalogue"]
