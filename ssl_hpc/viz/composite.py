"""Colour composites of multi-band cutouts (Lupton et al. 2004 asinh stretch)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from astropy.visualization import make_lupton_rgb

from ..data.format import BAND_ORDER


def rgb_bands(bands: Sequence[str]) -> tuple[int, int, int]:
    """Indices of the bands shown as (R, G, B): the reddest three known bands, reddest as R.

    For ugriz that is (i, r, g), the SDSS convention. Unknown band names fall back to the
    last three bands in the given order; fewer than three bands repeat the last one.
    """
    known = [i for i, b in enumerate(bands) if b in BAND_ORDER]
    if len(known) >= 3:
        known.sort(key=lambda i: BAND_ORDER.index(bands[i]))
        chosen = known[-3:]
        if len(known) > 3 and bands[chosen[-1]] in ("z", "y"):
            chosen = known[-4:-1]  # z and y are noisy: prefer i, r, g
        return chosen[2], chosen[1], chosen[0]
    idx = list(range(len(bands)))[-3:]
    while len(idx) < 3:
        idx.insert(0, idx[0])
    return idx[2], idx[1], idx[0]


def noise_sigma(band: np.ndarray) -> float:
    """Robust per-pixel noise of one band image: 1.4826 x MAD about the median."""
    return float(1.4826 * np.median(np.abs(band - np.median(band))))


#: Display weights per band (relative), so early types look yellow and star-forming
#: regions blue as in SDSS composites; physical flux ratios are otherwise kept.
DISPLAY_WEIGHT = {"u": 2.2, "g": 1.8, "r": 1.2, "i": 1.0, "z": 0.8, "y": 0.7}


def composite_softening(image: np.ndarray, bands: Sequence[str], stretch: float = 6.0) -> float:
    """The asinh softening `rgb_composite` uses for `image`: `stretch` x the mean robust
    noise sigma of its three display channels (after their display weights)."""
    img = np.asarray(image, dtype=np.float64)
    sigmas = [noise_sigma(img[i] * DISPLAY_WEIGHT.get(bands[i], 1.0)) for i in rgb_bands(bands)]
    return float(np.mean(sigmas) * stretch)


def rgb_composite(
    image: np.ndarray,
    bands: Sequence[str],
    stretch: float = 6.0,
    q: float = 8.0,
    display_values: bool = False,
    softening: float | None = None,
) -> np.ndarray:
    """(B, H, W) fluxes -> (H, W, 3) uint8 colour composite via astropy's make_lupton_rgb.

    Channels get fixed display weights (DISPLAY_WEIGHT), then one common scale: the asinh
    softening is `stretch` times the mean robust noise sigma of the three channels, so the
    sky looks alike whatever the flux unit or depth. `display_values`: the image already
    holds display intensities in [0, 1] (JPEG/PNG ingests): shown as they are.
    `softening`: use this asinh softening (flux units) instead, e.g. one shared by a grid of
    views of one galaxy so their noise and brightness compare by eye.
    """
    idx = rgb_bands(bands)
    img = np.asarray(image, dtype=np.float64)
    if display_values:
        return (np.clip(np.moveaxis(img[list(idx)], 0, -1), 0, 1) * 255).round().astype(np.uint8)
    chans = [img[i] * DISPLAY_WEIGHT.get(bands[i], 1.0) for i in idx]
    if softening is None:
        softening = composite_softening(img, bands, stretch)
    with np.errstate(invalid="ignore", divide="ignore"):  # astropy divides 0 by 0 on dark sky
        return make_lupton_rgb(*[c / max(softening, 1e-12) for c in chans], stretch=1.0, Q=q)
