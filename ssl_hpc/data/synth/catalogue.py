"""The synthetic survey's catalogue: who each galaxy is, before any pixel is drawn.

Redshifts and colours come from real SDSS DR14 spectroscopic galaxies (shipped beside this
file), jittered; apparent size and brightness follow the redshift through a Planck 2018
cosmology; morphology follows colour (the u-r = 2.22 split of Strateva et al. 2001);
labels follow the real survey's selection (spectra for r < 17.77, Galaxy Zoo for the
brightest part of that), so labelled galaxies are brighter and larger than the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.cosmology import Planck18

from .. import format as fmt
from .config import (
    ANOMALY_KINDS,
    MORPH_CLASSES,
    SDSS_DEPTH_5SIGMA,
    SDSS_SKY_MU,
    SEEING_RATIO,
    TEMPLATE_BANDS,
    SynthConfig,
)

E, SP, BAR, EDGE, IRR, MERGER = range(len(MORPH_CLASSES))
LENS, RING, TRAIL, STAR = range(1, len(ANOMALY_KINDS))
MAX_NEIGHBOURS = 4


@dataclass(frozen=True)
class Templates:
    """Real SDSS objects: galaxies (z, ugriz) and stars (ugriz) as colour templates."""

    gal_z: np.ndarray  # (G,)
    gal_mag: np.ndarray  # (G, 5) ugriz
    star_mag: np.ndarray  # (S, 5)


@lru_cache(maxsize=1)
def load_templates() -> Templates:
    """Read the shipped SDSS DR14 template table (galaxies with 0 < z < 0.4, stars)."""
    path = resources.files(__package__) / "sdss_dr14_templates.csv"
    with path.open() as f:
        rows = [line.rstrip("\n").split(",") for line in f if not line.startswith("#")]
    header, rows = rows[0], rows[1:]
    cls = np.array([r[header.index("class")] for r in rows])
    z = np.array([float(r[header.index("redshift")]) for r in rows])
    mag = np.array([[float(r[header.index(b)]) for b in TEMPLATE_BANDS] for r in rows])
    ok = np.all((mag > 10) & (mag < 26), axis=1)
    gal = ok & (cls == "GALAXY") & (z > 0.002) & (z < 0.4)
    star = ok & (cls == "STAR")
    return Templates(gal_z=z[gal], gal_mag=mag[gal], star_mag=mag[star])


@lru_cache(maxsize=1)
def _cosmology_grid() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    z = np.linspace(0.001, 0.45, 450)
    dm = Planck18.distmod(z).value
    kpc_per_arcsec = Planck18.kpc_proper_per_arcmin(z).to(u.kpc / u.arcsec).value
    return z, dm, kpc_per_arcsec


def distance_modulus(z: np.ndarray) -> np.ndarray:
    """Planck18 distance modulus (mag), interpolated on a fine grid."""
    grid, dm, _ = _cosmology_grid()
    return np.interp(z, grid, dm)


def kpc_per_arcsec(z: np.ndarray) -> np.ndarray:
    """Proper kpc subtended by one arcsec at redshift z (Planck18)."""
    grid, _, scale = _cosmology_grid()
    return np.interp(z, grid, scale)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def noise_model(bands: tuple[str, ...], seeing_r: float, pixel_scale: float) -> dict:
    """Per-band sky sigma (nmgy/px) and gain (e-/nmgy) reproducing SDSS depths.

    The 5-sigma point-source flux F5 spread over a Gaussian PSF's noise-equivalent area
    4 pi s^2 (s = PSF sigma in px) fixes the per-pixel sky sigma: F5 = 5 sigma sqrt(4 pi s^2).
    The sky level per pixel and that sigma fix the gain (Poisson: sigma^2 = sky / gain).
    """
    sigma, gain = [], []
    for b in bands:
        s_px = seeing_r * SEEING_RATIO[b] / 2.3548 / pixel_scale
        f5 = fmt.mag_to_nmgy(SDSS_DEPTH_5SIGMA[b])
        sig = f5 / (5.0 * np.sqrt(4 * np.pi * s_px**2))
        sky = fmt.mag_to_nmgy(SDSS_SKY_MU[b]) * pixel_scale**2
        sigma.append(sig)
        gain.append(sky / sig**2)
    return {"sky_sigma": np.array(sigma), "gain": np.array(gain)}


def _positions(
    rng: np.random.Generator, n: int, footprint: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Uniform on the sphere over the footprint (ra_min, ra_max, dec_min, dec_max in deg),
    sorted by RA (shards = stripes)."""
    ra_min, ra_max, dec_min, dec_max = footprint
    ra = np.mod(rng.uniform(ra_min, ra_max, n), 360.0)
    sin_dec = rng.uniform(np.sin(np.radians(dec_min)), np.sin(np.radians(dec_max)), n)
    dec = np.degrees(np.arcsin(sin_dec))
    order = np.argsort(ra, kind="stable")
    return ra[order], dec[order]


def _ebv(cfg: SynthConfig, rng: np.random.Generator, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Galactic E(B-V): the cosecant law in galactic latitude with 0.25 dex scatter."""
    b = SkyCoord(ra=ra * u.deg, dec=dec * u.deg).galactic.b.radian
    ebv = cfg.ebv_csc_scale / np.maximum(np.abs(np.sin(b)), 0.1)
    return np.clip(ebv * 10 ** rng.normal(0, 0.25, len(ra)), 0.003, 0.5)


def _morphology(rng: np.random.Generator, u_r: np.ndarray, faint: np.ndarray) -> tuple:
    """Class per galaxy from its colour, plus the disk inclination cosine."""
    n = len(u_r)
    early = rng.random(n) < _sigmoid((u_r - 2.22) / 0.12)
    cos_i = rng.random(n)
    morph = np.full(n, SP)
    morph[~early & (cos_i < 0.22)] = EDGE
    morph[~early & (cos_i >= 0.22) & (rng.random(n) < 0.3)] = BAR
    irregular = ~early & (rng.random(n) < 0.06 + 0.12 * faint)
    morph[irregular] = IRR
    morph[early] = E
    morph[rng.random(n) < 0.03] = MERGER
    return morph, cos_i


def _votes(cfg: SynthConfig, rng: np.random.Generator, cat: dict, chosen: np.ndarray) -> dict:
    """Galaxy Zoo 2-like vote fractions (soft labels) for the `chosen` galaxies.

    True answer probabilities follow the morphology; features fade for small, faint
    galaxies (the GZ2 redshift bias); each galaxy gets ~gz_volunteers votes, so the
    fractions carry binomial volunteer noise. Conditional questions (edge-on, bar, spiral)
    are fractions of the volunteers who reached them, as GZ2 publishes them.
    """
    n = len(cat["z_true"])
    morph, anomaly = cat["morph_class"], cat["anomaly_kind"]
    p_feat = np.select(
        [morph == E, morph == IRR, morph == MERGER], [0.10, 0.55, 0.60], default=0.88
    )
    p_art = np.where((anomaly == TRAIL) | (anomaly == STAR), 0.35, 0.02)
    size_ratio = cat["half_light_arcsec"] / cat["psf_fwhm"][:, cat["bands"].index("r")]
    visible = _sigmoid((size_ratio - 1.0) / 0.35) * _sigmoid((17.6 - cat["r_obs"]) / 0.4)
    p_feat = p_feat * (0.35 + 0.65 * visible)
    p_t01 = np.stack([1 - p_feat - p_art, p_feat, p_art], axis=1).clip(0.001, 1)
    p_t01 /= p_t01.sum(1, keepdims=True)

    total = np.maximum(rng.poisson(cfg.gz_volunteers, n), 5)
    t01 = np.array([rng.multinomial(t, p) for t, p in zip(total, p_t01)])
    n_feat = t01[:, 1]
    p_edge = np.where(morph == EDGE, 0.92, 0.05)
    edge = rng.binomial(n_feat, p_edge)
    n_face = n_feat - edge
    p_bar = np.where(morph == BAR, 0.80, 0.07)
    p_spiral = np.select(
        [np.isin(morph, (SP, BAR)), morph == MERGER, morph == IRR], [0.90, 0.45, 0.25], default=0.10
    )
    p_merger = np.where(morph == MERGER, 0.70, np.where(np.isin(anomaly, (LENS, RING)), 0.15, 0.02))

    def frac(k: np.ndarray, of: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(of > 0, k / of, np.nan)

    out = {
        "gz2_smooth": frac(t01[:, 0], total),
        "gz2_features": frac(t01[:, 1], total),
        "gz2_artifact": frac(t01[:, 2], total),
        "gz2_edgeon": frac(edge, n_feat),
        "gz2_bar": frac(rng.binomial(n_face, p_bar), n_face),
        "gz2_spiral": frac(rng.binomial(n_face, p_spiral), n_face),
        "gz2_merger": frac(rng.binomial(total, p_merger), total),
        "gz2_n_votes": total.astype(np.float64),
    }
    return {k: np.where(chosen, v, np.nan).astype(np.float32) for k, v in out.items()}


def draw_catalogue(cfg: SynthConfig) -> dict[str, np.ndarray]:
    """Every per-object quantity of the survey, vectorised over all objects.

    Deterministic in ``cfg.seed``. Magnitudes are AB; ``mag_*`` are the observed
    (extinguished) model magnitudes with photometric noise; sizes are in arcsec.

    long: one vectorised physical recipe, read top to bottom; every draw consumes the one
    random stream in order, so splitting it would hide that order.
    """
    rng = np.random.default_rng([cfg.seed, 0xCA7])
    t = load_templates()
    n = cfg.n_objects
    b_idx = [TEMPLATE_BANDS.index(b) for b in cfg.bands]
    r_i = TEMPLATE_BANDS.index("r")

    # --- redshift, colours, luminosity -------------------------------------------------
    pick = rng.integers(0, len(t.gal_z), n)
    z_t = t.gal_z[pick]
    z = np.clip(z_t * np.exp(rng.normal(0, 0.03, n)), 0.003, 0.399)
    colours = -np.diff(t.gal_mag[pick], axis=1)  # u-g ... i-z
    colours += rng.normal(0, cfg.colour_scatter_mag, (n, 4))
    abs_r = t.gal_mag[pick, r_i] - distance_modulus(z_t)
    dimming = rng.uniform(0, cfg.faint_range, n)
    r_true = abs_r + distance_modulus(z) + dimming
    # rebuild ugriz from r and the colours (u-g, g-r, r-i, i-z)
    mag = np.empty((n, 5))
    mag[:, r_i] = r_true
    mag[:, 1] = r_true + colours[:, 1]
    mag[:, 0] = mag[:, 1] + colours[:, 0]
    mag[:, 3] = r_true - colours[:, 2]
    mag[:, 4] = mag[:, 3] - colours[:, 3]

    ra, dec = _positions(rng, n, cfg.footprint)
    ebv = _ebv(cfg, rng, ra, dec)
    ext = np.array([fmt.SDSS_EXTINCTION[b] for b in TEMPLATE_BANDS])
    r_obs = r_true + ext[r_i] * ebv

    # --- morphology and structure ------------------------------------------------------
    faint = np.clip(dimming / max(cfg.faint_range, 1e-6), 0, 1)
    morph, cos_i = _morphology(rng, mag[:, 0] - mag[:, 2], faint)
    lum = abs_r + dimming + 21.0  # M_r + 21 of the galaxy as drawn (dimmed = less luminous)
    early = morph == E
    # size-luminosity relations (Shen et al. 2003 slopes), 0.15 dex scatter
    log_re_kpc = np.where(early, 0.40 - 0.26 * lum, 0.54 - 0.2 * lum) + rng.normal(0, 0.15, n)
    half_light = np.clip(10**log_re_kpc / kpc_per_arcsec(z), 0.4, 12.0)

    # --- observing conditions ----------------------------------------------------------
    seeing_r = np.clip(
        cfg.seeing_r_median * 10 ** rng.normal(0, cfg.seeing_scatter_dex, n), 0.8, 2.4
    )
    ratio = np.array([SEEING_RATIO[b] for b in cfg.bands])
    psf_fwhm = seeing_r[:, None] * ratio[None, :] * (1 + rng.normal(0, 0.02, (n, len(cfg.bands))))
    noise = noise_model(cfg.bands, cfg.seeing_r_median, cfg.pixel_scale_arcsec)
    depth = 10 ** rng.normal(0, cfg.depth_scatter_dex, (n, len(cfg.bands)))
    sky_sigma = noise["sky_sigma"][None, :] * depth

    # --- anomalies ---------------------------------------------------------------------
    anomaly = np.zeros(n, dtype=np.int8)
    n_anom = int(round(cfg.anomaly_fraction * n))
    if n_anom:
        who = rng.choice(n, n_anom, replace=False)
        anomaly[who] = rng.integers(1, len(ANOMALY_KINDS), n_anom)
    morph[anomaly == LENS] = E  # lenses are massive early types
    morph[anomaly == RING] = SP

    # --- observed photometry and labels ------------------------------------------------
    mag_obs = mag + ext[None, :] * ebv[:, None]
    depth5 = np.array([SDSS_DEPTH_5SIGMA[b] for b in TEMPLATE_BANDS])
    snr = 5 * 10 ** (-0.4 * (mag_obs - depth5))
    mag_obs = mag_obs + rng.normal(0, 1, mag_obs.shape) * np.maximum(1.0857 / snr, 0.01)
    z_spec = np.where(
        (r_obs - ext[r_i] * ebv < cfg.spec_mag_limit) & (rng.random(n) < cfg.spec_completeness),
        z,
        np.nan,
    )
    gz_chosen = (r_obs - ext[r_i] * ebv < cfg.gz_mag_limit) & (rng.random(n) < cfg.gz_completeness)

    cat = {
        "object_id": cfg.id_start + np.arange(n, dtype=np.int64),
        "ra": ra,
        "dec": dec,
        "ebv": ebv.astype(np.float32),
        "z_spec": z_spec.astype(np.float32),
        "z_true": z.astype(np.float32),
        "morph_class": morph.astype(np.int8),
        "anomaly_kind": anomaly,
        "is_anomaly": (anomaly > 0).astype(np.int8),
        "half_light_arcsec": half_light.astype(np.float32),
        "cos_inclination": cos_i.astype(np.float32),
        "psf_fwhm": psf_fwhm.astype(np.float32),
        "sky_sigma": sky_sigma.astype(np.float32),
        "gain": np.broadcast_to(noise["gain"], (n, len(cfg.bands))) / depth**2,
        "flux_true": fmt.mag_to_nmgy(mag[:, b_idx] + ext[b_idx][None, :] * ebv[:, None]),
        "r_obs": r_obs,
        "bands": list(cfg.bands),
    }
    for j, b in enumerate(TEMPLATE_BANDS):
        cat[f"mag_{b}"] = mag_obs[:, j].astype(np.float32)
    cat.update(_votes(cfg, rng, cat, gz_chosen))
    return cat


#: Catalogue keys written to shards as columns, with their role.
COLUMN_ROLES = {
    "ebv": "catalogue",
    **{f"mag_{b}": "catalogue" for b in TEMPLATE_BANDS},
    "z_spec": "label",
    **{
        k: "label"
        for k in (
            "gz2_smooth",
            "gz2_features",
            "gz2_artifact",
            "gz2_edgeon",
            "gz2_bar",
            "gz2_spiral",
            "gz2_merger",
            "gz2_n_votes",
        )
    },
    "z_true": "truth",
    "morph_class": "truth",
    "anomaly_kind": "truth",
    "is_anomaly": "truth",
    "half_light_arcsec": "truth",
}
