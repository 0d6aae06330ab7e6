"""Pixels of the synthetic survey: galaxies, neighbours and anomalies through PSF and noise.

For a block of catalogue rows: draw each galaxy's structure, add its components
(bulge, disk with arms, bar, clumps, companion and tidal tail, lensed arcs, rings) each
with its own colours, add neighbouring stars and galaxies, blur every band with that
object's Gaussian PSF (exactly, in Fourier space), add artefacts that are not blurred by
the atmosphere's PSF (satellite trails, saturated stars), then sky + Poisson noise.
Images are sky-subtracted, in nanomaggies per pixel.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.fft

from .. import format as fmt
from . import profiles as prof
from .catalogue import (
    BAR,
    EDGE,
    IRR,
    LENS,
    MAX_NEIGHBOURS,
    MERGER,
    RING,
    SP,
    STAR,
    TRAIL,
    E,
    load_templates,
)
from .config import TEMPLATE_BANDS, SynthConfig

#: Relative flux per band of young stars (clumps, rings, lensed sources) w.r.t. the host.
BLUE_BOOST = {"u": 1.8, "g": 1.4, "r": 1.0, "i": 0.85, "z": 0.75}
#: Per-pixel saturation of the SDSS CCDs, in nmgy (about 55,000 counts at ~200 counts/nmgy).
SATURATION_NMGY = 300.0
CHUNK = 128


@lru_cache(maxsize=1)
def _red_sequence() -> tuple[np.ndarray, np.ndarray]:
    """Median ugriz of red (u-r > 2.4) template galaxies in z bins, relative to r (flux ratio)."""
    t = load_templates()
    red = (t.gal_mag[:, 0] - t.gal_mag[:, 2]) > 2.4
    edges = np.array([0.0, 0.04, 0.07, 0.1, 0.13, 0.17, 0.22, 0.4])
    centres, ratios = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = red & (t.gal_z >= lo) & (t.gal_z < hi)
        if sel.sum() >= 5:
            col = np.median(t.gal_mag[sel] - t.gal_mag[sel, 2:3], axis=0)
            centres.append(np.median(t.gal_z[sel]))
            ratios.append(10 ** (-0.4 * col))
    return np.array(centres), np.array(ratios)


def red_sed(z: np.ndarray, bands: tuple[str, ...]) -> np.ndarray:
    """Flux per band relative to r of a red-sequence galaxy at redshift z, (n, B)."""
    centres, ratios = _red_sequence()
    cols = [TEMPLATE_BANDS.index(b) for b in bands]
    return np.stack([np.interp(z, centres, ratios[:, c]) for c in cols], axis=1)


def _mag_sed(r_mag: np.ndarray, colours: np.ndarray, bands: tuple[str, ...]) -> np.ndarray:
    """Band fluxes (n, B) from an r magnitude and ugriz colours relative to r, (n, 5)."""
    cols = [TEMPLATE_BANDS.index(b) for b in bands]
    return fmt.mag_to_nmgy(r_mag[:, None] + colours[:, cols])


class Canvas:
    """Pre-PSF images of a block of objects, filled component by component."""

    def __init__(self, n: int, bands: int, size: int) -> None:
        self.size = size
        self.image = np.zeros((n, bands, size, size), np.float32)

    def add(self, rows: np.ndarray, shape: np.ndarray, flux: np.ndarray) -> None:
        """Add unit-sum `shape` (k, H, W) times band `flux` (k, B) to objects `rows`."""
        if len(rows):
            self.image[rows] += flux.astype(np.float32)[:, :, None, None] * shape[:, None]


def _galaxy_bodies(cv: Canvas, cat: dict, rng: np.random.Generator, scale: float) -> None:
    """Bulges, disks, bars, clumps, companions, tails, lens arcs and rings.

    long: each component draws from the shared random stream in a fixed order (changing
    it changes every survey); the sections are marked with comments.
    """
    n = len(cat["z_true"])
    size = cv.size
    bands = tuple(cat["bands"])
    r = bands.index("r")
    morph, kind = cat["morph_class"], cat["anomaly_kind"]
    flux = cat["flux_true"].copy()  # (n, B), the galaxy's total per band
    re = cat["half_light_arcsec"] / scale
    x0, y0 = rng.uniform(-0.5, 0.5, (2, n))
    pa = rng.uniform(0, np.pi, n)
    blue = np.array([BLUE_BOOST[b] for b in bands])

    # mergers: a companion takes part of the light, a tidal tail another part
    merger = np.flatnonzero(morph == MERGER)
    if len(merger):
        m = len(merger)
        ratio = rng.uniform(0.3, 0.8, m)
        sep = re[merger] * rng.uniform(1.2, 2.5, m) + 4
        ang = rng.uniform(0, 2 * np.pi, m)
        shape = prof.sersic(
            size,
            x0[merger] + sep * np.cos(ang),
            y0[merger] + sep * np.sin(ang),
            re[merger] * rng.uniform(0.5, 0.9, m),
            rng.uniform(1, 4, m),
            rng.uniform(0.4, 1, m),
            rng.uniform(0, np.pi, m),
        )
        cv.add(merger, shape, flux[merger] * (ratio / (1 + ratio + 0.15))[:, None])
        tail = prof.arc(
            size,
            x0[merger],
            y0[merger],
            sep * rng.uniform(1.0, 1.6, m),
            np.full(m, 1.5),
            ang + np.pi + rng.uniform(-0.5, 0.5, m),
            rng.uniform(0.4, 0.8, m),
        )
        cv.add(merger, tail, flux[merger] * (0.15 / (1 + ratio + 0.15))[:, None])
        flux[merger] /= (1 + ratio + 0.15)[:, None]

    # early types (and merger primaries drawn red): one de Vaucouleurs-like body
    early = np.flatnonzero((morph == E) | ((morph == MERGER) & (rng.random(n) < 0.5)))
    if len(early):
        k = len(early)
        shape = prof.sersic(
            size,
            x0[early],
            y0[early],
            re[early],
            rng.uniform(3, 5.5, k),
            rng.uniform(0.55, 1.0, k),
            pa[early],
        )
        cv.add(early, shape, flux[early])

    # disks: red bulge + disk (arms for spirals, bars, rings; clumps for irregulars)
    disk = np.setdiff1d(np.flatnonzero(morph != E), early)
    if not len(disk):
        _anomalous_sources(cv, cat, rng, scale, x0, y0, re, flux)
        return
    k = len(disk)
    bt = np.where(morph[disk] == IRR, 0.02, rng.uniform(0.05, 0.4, k))
    bulge = np.minimum(
        bt[:, None] * flux[disk, r : r + 1] * red_sed(cat["z_true"][disk], bands), 0.8 * flux[disk]
    )
    q_disk = np.sqrt(cat["cos_inclination"][disk] ** 2 * (1 - 0.12**2) + 0.12**2)
    q_disk[morph[disk] == EDGE] = rng.uniform(0.08, 0.2, (morph[disk] == EDGE).sum())
    shape = prof.sersic(
        size,
        x0[disk],
        y0[disk],
        0.25 * re[disk],
        rng.uniform(1, 2.5, k),
        np.maximum(q_disk, rng.uniform(0.7, 1.0, k)),
        pa[disk],
    )
    cv.add(disk, shape, bulge)
    disk_flux = flux[disk] - bulge

    armed = np.isin(morph[disk], (SP, BAR, MERGER)) | (kind[disk] == RING)
    amp = np.where(armed, rng.uniform(0.3, 0.8, k), np.where(morph[disk] == IRR, 0.15, 0.0))
    bar_sel = morph[disk] == BAR
    bar_frac = np.where(bar_sel, rng.uniform(0.1, 0.2, k), 0.0)
    clump_sel = morph[disk] == IRR
    clump_frac = np.where(clump_sel, rng.uniform(0.2, 0.4, k), 0.0)
    clump_flux = np.minimum(clump_frac[:, None] * disk_flux * blue / blue[r], 0.8 * disk_flux)
    shape = prof.spiral_disk(
        size,
        x0[disk],
        y0[disk],
        re[disk],
        q_disk,
        pa[disk],
        rng.choice([2, 2, 2, 3], k),
        np.radians(rng.uniform(12, 30, k)),
        amp,
        rng.uniform(0, 2 * np.pi, k),
    )
    cv.add(disk, shape, (disk_flux - clump_flux) * (1 - bar_frac)[:, None])
    if bar_sel.any():
        b = disk[bar_sel]
        shape = prof.sersic(
            size,
            x0[b],
            y0[b],
            re[b] * rng.uniform(0.5, 0.9, len(b)),
            np.full(len(b), 0.5),
            np.full(len(b), 0.25),
            rng.uniform(0, np.pi, len(b)),
        )
        cv.add(b, shape, (disk_flux[bar_sel] * bar_frac[bar_sel, None]))
    if clump_sel.any():
        c = disk[clump_sel]
        m, nk = len(c), 6
        rad = re[c, None] * np.sqrt(rng.random((m, nk))) * 1.2
        ang = rng.uniform(0, 2 * np.pi, (m, nk))
        weight = rng.random((m, nk)) * (rng.random((m, nk)) < 0.7)
        weight[:, 0] += 0.1  # at least one clump
        shape = prof.gaussians(
            size,
            x0[c, None] + rad * np.cos(ang),
            y0[c, None] + rad * np.sin(ang),
            rng.uniform(0.6, 1.5, (m, nk)),
            weight,
        )
        cv.add(c, shape, clump_flux[clump_sel])
    _anomalous_sources(cv, cat, rng, scale, x0, y0, re, flux)


def _anomalous_sources(cv: Canvas, cat: dict, rng, scale, x0, y0, re, flux) -> None:
    """Gravitationally lensed arcs around early types; star-forming collisional rings."""
    size = cv.size
    bands = tuple(cat["bands"])
    kind = cat["anomaly_kind"]
    blue = np.array([BLUE_BOOST[b] for b in bands])
    lens = np.flatnonzero(kind == LENS)
    if len(lens):
        m = len(lens)
        theta_e = rng.uniform(1.3, 3.0, m) / scale
        ring = rng.random(m) < 0.25  # Einstein rings: the source right behind the lens
        spread = np.where(ring, 50.0, rng.uniform(0.3, 0.7, m))
        shape = prof.arc(
            size, x0[lens], y0[lens], theta_e, np.full(m, 0.7), rng.uniform(0, 2 * np.pi, m), spread
        )
        ext = np.array([fmt.SDSS_EXTINCTION[b] for b in bands])
        source_r = rng.uniform(18.0, 19.5, m)
        colours = np.array([0.65, 0.25, 0.0, -0.15, -0.25])  # blue star-forming source
        sed = _mag_sed(source_r, np.broadcast_to(colours, (m, 5)), bands)
        cv.add(lens, shape, sed * 10 ** (-0.4 * ext[None, :] * cat["ebv"][lens, None]))
    ring_rows = np.flatnonzero(kind == RING)
    if len(ring_rows):
        m = len(ring_rows)
        radius = re[ring_rows] * rng.uniform(1.5, 2.5, m) + 3
        shape = prof.arc(
            size, x0[ring_rows], y0[ring_rows], radius, 0.15 * radius, np.zeros(m), np.full(m, 50.0)
        )
        cv.add(ring_rows, shape, 0.8 * flux[ring_rows] * blue / blue.mean())


def _neighbours(cv: Canvas, cat: dict, cfg: SynthConfig, rng: np.random.Generator) -> None:
    """Field stars (real SDSS star colours) and background galaxies in the cutout."""
    t = load_templates()
    n = len(cat["z_true"])
    size, scale = cv.size, cfg.pixel_scale_arcsec
    bands = tuple(cat["bands"])
    cols = [TEMPLATE_BANDS.index(b) for b in bands]
    ext = np.array([fmt.SDSS_EXTINCTION[b] for b in bands])
    count = np.minimum(rng.poisson(cfg.neighbours_mean, n), MAX_NEIGHBOURS)
    for j in range(MAX_NEIGHBOURS):
        rows = np.flatnonzero(count > j)
        if not len(rows):
            break
        m = len(rows)
        dist = rng.uniform(0.15, 0.5, m) * size
        ang = rng.uniform(0, 2 * np.pi, m)
        x, y = dist * np.cos(ang), dist * np.sin(ang)
        star = rng.random(m) < 0.55
        mags = np.where(
            star[:, None],
            t.star_mag[rng.integers(0, len(t.star_mag), m)],
            t.gal_mag[rng.integers(0, len(t.gal_z), m)],
        )
        r_new = np.where(star, rng.uniform(16.0, 22.5, m), rng.uniform(18.5, 22.0, m))
        mags = mags[:, cols] - mags[:, 2:3] + r_new[:, None] + ext * cat["ebv"][rows, None]
        sed = fmt.mag_to_nmgy(mags)
        shape = np.where(
            star[:, None, None],
            prof.gaussians(size, x[:, None], y[:, None], np.full((m, 1), 0.3), np.ones((m, 1))),
            prof.sersic(
                size,
                x,
                y,
                rng.uniform(0.6, 2.5, m) / scale,
                rng.uniform(1, 4, m),
                rng.uniform(0.3, 1, m),
                rng.uniform(0, np.pi, m),
            ),
        )
        cv.add(rows, shape, sed)


def convolve_psf(images: np.ndarray, fwhm_arcsec: np.ndarray, scale: float) -> np.ndarray:
    """Blur each (object, band) image by its Gaussian PSF, exactly, via zero-padded FFTs."""
    n, b, h, w = images.shape
    sigma_px = fwhm_arcsec / 2.3548 / scale
    pad = int(np.ceil(4 * sigma_px.max())) if sigma_px.size else 0
    fft_shape = (scipy.fft.next_fast_len(h + pad), scipy.fft.next_fast_len(w + pad))
    spec = scipy.fft.rfft2(images, s=fft_shape, axes=(-2, -1), workers=1)
    spec *= prof.gaussian_psf_transfer(fft_shape, sigma_px)
    return scipy.fft.irfft2(spec, s=fft_shape, axes=(-2, -1), workers=1)[..., :h, :w]


def _artefacts(img: np.ndarray, cat: dict, rng: np.random.Generator, scale: float) -> None:
    """In place: satellite trails (one band: SDSS reads its bands minutes apart) and
    saturated bright stars with diffraction spikes and a bleed trail along the columns."""
    n, nb, size, _ = img.shape
    sigma_px = cat["psf_fwhm"] / 2.3548 / scale
    trail = np.flatnonzero(cat["anomaly_kind"] == TRAIL)
    if len(trail):
        m = len(trail)
        band = rng.integers(0, nb, m)
        shape = prof.line(
            size,
            rng.uniform(-20, 20, m),
            rng.uniform(-20, 20, m),
            rng.uniform(0, np.pi, m),
            sigma_px[trail, band],
        )
        peak = rng.uniform(8, 30, m) * cat["sky_sigma"][trail, band]
        img[trail, band] += peak[:, None, None] * shape
    stars = np.flatnonzero(cat["anomaly_kind"] == STAR)
    if len(stars):
        m = len(stars)
        dist, ang = rng.uniform(0.3, 0.7, m) * size, rng.uniform(0, 2 * np.pi, m)
        x, y = dist * np.cos(ang), dist * np.sin(ang)
        yy, xx = prof.grid(size)
        r2 = (xx - x[:, None, None]) ** 2 + (yy - y[:, None, None]) ** 2
        bands = tuple(cat["bands"])
        flux = _mag_sed(rng.uniform(10.5, 13.0, m), np.zeros((m, 5)), bands)  # (m, B)
        for j in range(nb):
            s2 = (sigma_px[stars, j] ** 2)[:, None, None]
            core = np.exp(-r2 / (2 * s2)) / (2 * np.pi * s2)
            halo = 0.05 / (2 * np.pi * 9.0) / (1 + r2 / 9.0) ** 1.5  # wings: 5% of the flux
            spikes = 2e-4 * (
                prof.line(size, x, y, np.zeros(m), np.full(m, 0.7))
                + prof.line(size, x, y, np.full(m, np.pi / 2), np.full(m, 0.7))
            )
            spikes /= 1 + np.sqrt(r2) / 10.0
            star = flux[:, j, None, None] * (0.95 * core + halo + spikes)
            img[stars, j] = np.minimum(img[stars, j] + star, SATURATION_NMGY)
        # bleed trail: charge overflowing along the CCD column of the saturated core
        col = np.round(x + (size - 1) / 2).astype(int)
        row = np.round(y + (size - 1) / 2).astype(int)
        r = bands.index("r")
        length = np.clip(6 * np.log10(flux[:, r] / SATURATION_NMGY), 0, 40).astype(int)
        for i, s in enumerate(stars):
            lo, hi = max(row[i] - length[i], 0), min(row[i] + length[i] + 1, size)
            if lo < hi and 0 <= col[i] < size:
                img[s, :, lo:hi, col[i]] = SATURATION_NMGY


def render_block(cat: dict, cfg: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """Noisy, sky-subtracted images (n, B, H, W) in nmgy for one block of catalogue rows."""
    n = len(cat["z_true"])
    cv = Canvas(n, len(cfg.bands), cfg.image_size)
    _galaxy_bodies(cv, cat, rng, cfg.pixel_scale_arcsec)
    _neighbours(cv, cat, cfg, rng)
    img = convolve_psf(cv.image, cat["psf_fwhm"], cfg.pixel_scale_arcsec)
    _artefacts(img, cat, rng, cfg.pixel_scale_arcsec)
    var = (
        cat["sky_sigma"][:, :, None, None] ** 2 + np.maximum(img, 0) / cat["gain"][:, :, None, None]
    )
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.sqrt(var).astype(np.float32)
    return img.astype(np.float32)


def render_rows(cat: dict, cfg: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """`render_block` in chunks of 128 objects, bounding memory for any shard size."""
    n = len(cat["z_true"])
    out = np.empty((n, len(cfg.bands), cfg.image_size, cfg.image_size), np.float32)
    for start in range(0, n, CHUNK):
        sl = slice(start, start + CHUNK)
        block = {k: (v[sl] if isinstance(v, np.ndarray) else v) for k, v in cat.items()}
        out[sl] = render_block(block, cfg, rng)
    return out
