"""HEALPix pixels of sky positions (NESTED ordering), for partitioning shards by sky area.

Order k means nside = 2**k (12 * 4**k pixels); Multimodal Universe splits its files at
order 4 (nside 16, about 3.7 deg across). In NESTED ordering a pixel's parent at a lower
order is its index shifted right by two bits per order, so partitions at different orders
nest. Positions are J2000 degrees; an object without a position cannot be placed.
"""

from __future__ import annotations

import astropy.units as u
import numpy as np
from astropy_healpix import HEALPix, lonlat_to_healpix

from ..errors import SurveyError

MAX_ORDER = 29  # HATS's own index is at order 29
MMU_ORDER = 4  # Multimodal Universe's nside 16


def check_order(order: int, what: str = "healpix_order") -> int:
    """`order` if it is a HEALPix order we can use; SurveyError naming `what` if not."""
    if not isinstance(order, int | np.integer) or not 0 <= int(order) <= MAX_ORDER:
        raise SurveyError(
            f"{what} {order!r}: expected an integer 0..{MAX_ORDER} (nside = 2**order)"
        )
    return int(order)


def pixels(ra: np.ndarray, dec: np.ndarray, order: int) -> np.ndarray:
    """(N,) int64 NESTED pixel at `order` of each (ra, dec) in degrees; SurveyError if any
    position is missing or outside the sky."""
    ra = np.asarray(ra, dtype=np.float64)
    dec = np.asarray(dec, dtype=np.float64)
    bad = ~(np.isfinite(ra) & np.isfinite(dec) & (np.abs(dec) <= 90))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise SurveyError(
            f"{int(bad.sum())} object(s) have no valid position (first: row {i}, "
            f"ra={ra[i]}, dec={dec[i]}); HEALPix partitioning needs ra and dec"
        )
    if len(ra) == 0:
        return np.empty(0, np.int64)
    nside = 2 ** check_order(order)
    return np.asarray(
        lonlat_to_healpix(np.mod(ra, 360.0) * u.deg, dec * u.deg, nside, order="nested"),
        dtype=np.int64,
    )


def parent(pixel: np.ndarray | int, order: int, to_order: int) -> np.ndarray:
    """The NESTED pixel at `to_order` (<= `order`) that contains `pixel` at `order`."""
    if to_order > order:
        raise SurveyError(f"healpix order {to_order} is finer than {order}: no single parent")
    return np.asarray(pixel, dtype=np.int64) >> (2 * (order - to_order))


def cone_pixels(ra: float, dec: float, radius_arcsec: float, order: int) -> np.ndarray:
    """Sorted NESTED pixels at `order` that overlap (even partly) the cone of
    `radius_arcsec` around (ra, dec): every shard that could hold an object in the cone."""
    hp = HEALPix(nside=2 ** check_order(order), order="nested")
    # astropy-healpix's search misses pixels that the cone only clips: widen it by more than
    # a pixel's centre-to-corner distance (< 1.4 x its side at every order) to keep them all
    pad = 1.5 * hp.pixel_resolution.to_value(u.arcsec)
    found = hp.cone_search_lonlat(ra * u.deg, dec * u.deg, (radius_arcsec + pad) * u.arcsec)
    return np.unique(np.asarray(found, dtype=np.int64))


def angular_sep_arcsec(ra: np.ndarray, dec: np.ndarray, ra0: float, dec0: float) -> np.ndarray:
    """Great-circle separation (haversine, stable at small angles) in arcsec."""
    r, d, r0, d0 = map(np.radians, (ra, dec, ra0, dec0))
    h = np.sin((d - d0) / 2) ** 2 + np.cos(d) * np.cos(d0) * np.sin((r - r0) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0, 1)))) * 3600.0


def group_rows(pixel: np.ndarray, max_rows: int) -> list[tuple[int, np.ndarray]]:
    """Rows grouped by pixel, in pixel order, each pixel's rows in their original order and
    cut into runs of at most `max_rows`: [(pixel, rows)], one entry per shard to write."""
    order = np.argsort(pixel, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(pixel[order]) != 0])
    groups = []
    for lo, hi in zip(starts, np.r_[starts[1:], len(order)]):
        rows = order[lo:hi]
        groups += [
            (int(pixel[rows[0]]), rows[i : i + max_rows]) for i in range(0, len(rows), max_rows)
        ]
    return groups


def shard_rows(
    ra: np.ndarray, dec: np.ndarray, max_rows: int, order: int | None
) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Rows of a catalogue cut into shards of at most `max_rows`: runs in catalogue order,
    or with an `order` each pixel's rows (`group_rows`). Also the pixels (None without)."""
    if order is None:
        n = len(ra)
        return [np.arange(lo, min(lo + max_rows, n)) for lo in range(0, n, max_rows)], None
    pixel = pixels(ra, dec, order)
    return [rows for _, rows in group_rows(pixel, max_rows)], pixel
