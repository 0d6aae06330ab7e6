"""Settings of the synthetic SDSS-like survey (every number has a physical reason below)."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import ConfigError
from .. import format as fmt

#: Bands the colour templates cover (SDSS DR14 model magnitudes).
TEMPLATE_BANDS = ("u", "g", "r", "i", "z")

#: 5-sigma point-source depths of SDSS imaging (AB mag; Abazajian et al. 2004 quote 95%
#: completeness at 22.0, 22.2, 22.2, 21.3, 20.5).
SDSS_DEPTH_5SIGMA = {"u": 22.0, "g": 22.2, "r": 22.2, "i": 21.3, "z": 20.5}

#: Dark-sky surface brightness at SDSS (mag / arcsec^2).
SDSS_SKY_MU = {"u": 22.1, "g": 21.8, "r": 21.0, "i": 20.2, "z": 18.9}

#: Seeing in each band relative to r (atmospheric seeing scales ~ lambda^-0.2).
SEEING_RATIO = {"u": 1.10, "g": 1.05, "r": 1.00, "i": 0.97, "z": 0.96}

MORPH_CLASSES = ("elliptical", "spiral", "barred_spiral", "edge_on_disk", "irregular", "merger")
ANOMALY_KINDS = ("none", "lens_arc", "ring", "satellite_trail", "bright_star")


@dataclass(frozen=True)
class SynthConfig:
    """What ``ssl-hpc synth`` builds. Defaults follow SDSS DR7-era imaging and targeting."""

    survey: str = "synthetic-sdss"
    """the survey's name in its manifest"""
    n_objects: int = 4096
    """galaxies to draw"""
    rows_per_shard: int = 512
    """galaxies per HDF5 shard"""
    image_size: int = 107
    """cutout side, px (Hayat et al.: 107)"""
    pixel_scale_arcsec: float = fmt.SDSS_PIXEL_SCALE
    """arcsec per pixel (SDSS: 0.396)"""
    bands: tuple[str, ...] = TEMPLATE_BANDS
    """bands to render, from u g r i z (r is required)"""
    footprint: tuple[float, ...] = (120.0, 250.0, -5.0, 65.0)
    """sky area drawn uniformly: ra_min, ra_max, dec_min, dec_max in deg (default: an
    SDSS-like northern cap; ra_max may pass 360)"""
    seed: int = 0
    """everything drawn follows from it"""
    id_start: int = 1
    """the first object_id"""
    # photometry: apparent r = template's luminosity at the drawn z, made fainter by
    # U(0, faint_range) mag, which extends the survey ~2.8 mag below the spectroscopic limit
    faint_range: float = 2.8
    """galaxies are made fainter than their template by U(0, this) mag: the survey
    reaches ~2.8 mag below the spectroscopic limit"""
    colour_scatter_mag: float = 0.015
    """per-colour Gaussian scatter added to the template's colours. The templates already
    carry real SDSS scatter and photometric errors; this only keeps galaxies drawn from
    one template apart. At 0.015 the colours-only kNN photo-z of the labelled galaxies
    is close to that of real SDSS r < 17.77 galaxies (sigma_MAD 0.0198 vs 0.0186); the
    0.04 used before 2026-12-01 made it 24% looser (0.0232)"""
    # selection of labels (SDSS main galaxy sample and Galaxy Zoo 2)
    spec_mag_limit: float = 17.77  # extinction-corrected r, Strauss et al. 2002
    spec_completeness: float = 0.94  # fibre collisions lose ~6%
    gz_mag_limit: float = 17.0  # GZ2 took the brightest part of the main sample
    gz_completeness: float = 0.9
    """fraction of galaxies brighter than gz_mag_limit with Galaxy Zoo votes"""
    gz_volunteers: int = 40  # mean classifications per galaxy
    # observing conditions
    seeing_r_median: float = 1.3  # arcsec FWHM
    seeing_scatter_dex: float = 0.08
    """per-object seeing scatter around the median"""
    depth_scatter_dex: float = 0.04
    """per-object, per-band sky-noise scatter"""
    ebv_csc_scale: float = 0.018  # E(B-V) ~ scale / sin|b| (cosecant law), times scatter
    neighbours_mean: float = 1.5  # stars + background galaxies per cutout (Poisson mean)
    # rare objects with a ground-truth flag
    anomaly_fraction: float = 0.005
    """fraction of objects made anomalous (lens arcs, rings, satellite trails, bright
    stars), with a truth flag"""
    # storage
    image_dtype: str = "float16"
    """stored pixel type (float16 or float32)"""
    compression: str | None = None
    """HDF5 compression of the images (none, gzip, lzf)"""
    healpix_order: int | None = None
    """partition the shards by sky area: each shard holds rows of one NESTED HEALPix pixel
    at this order (nside = 2**order; 4 = Multimodal Universe's nside 16), at most
    rows_per_shard of them; none: shards in catalogue order"""
    workers: int = 2
    """processes rendering shards at once"""

    def __post_init__(self) -> None:
        bad = [b for b in self.bands if b not in TEMPLATE_BANDS]
        if bad or not self.bands:
            raise ConfigError(
                f"bands: {bad or 'empty'}: the colour templates cover {TEMPLATE_BANDS}"
            )
        if "r" not in self.bands:
            raise ConfigError(
                f"bands: {self.bands} lacks r, which sizes, colours and the "
                "spectroscopic selection are defined in"
            )
        ra0, ra1, dec0, dec1 = (*self.footprint, None, None, None, None)[:4]
        if len(self.footprint) != 4 or not (ra0 < ra1 <= ra0 + 360 and -90 <= dec0 < dec1 <= 90):
            raise ConfigError(
                f"footprint {self.footprint}: expected ra_min < ra_max (within 360 deg of it) "
                "and -90 <= dec_min < dec_max <= 90"
            )
        if len(set(self.bands)) != len(self.bands):
            raise ConfigError(f"bands: {self.bands} repeats a band")
        checks = {  # key: (within range, the range)
            "n_objects": (self.n_objects >= 1, ">= 1"),
            "rows_per_shard": (self.rows_per_shard >= 1, ">= 1"),
            "image_size": (16 <= self.image_size <= 512, "16..512 px"),
            "pixel_scale_arcsec": (self.pixel_scale_arcsec > 0, "> 0"),
            "spec_completeness": (0 <= self.spec_completeness <= 1, "0..1"),
            "gz_completeness": (0 <= self.gz_completeness <= 1, "0..1"),
            "anomaly_fraction": (0 <= self.anomaly_fraction <= 0.5, "0..0.5"),
            "faint_range": (self.faint_range >= 0, ">= 0 mag"),
            "colour_scatter_mag": (self.colour_scatter_mag >= 0, ">= 0 mag"),
            "gz_volunteers": (self.gz_volunteers >= 5, ">= 5"),
            "workers": (self.workers >= 1, ">= 1"),
            "image_dtype": (self.image_dtype in fmt.IMAGE_DTYPES, f"one of {fmt.IMAGE_DTYPES}"),
            "compression": (self.compression in fmt.COMPRESSIONS, f"one of {fmt.COMPRESSIONS}"),
            "healpix_order": (
                self.healpix_order is None or 0 <= self.healpix_order <= 29,
                "0..29, or none",
            ),
        }
        for key, (ok, allowed) in checks.items():
            if not ok:
                raise ConfigError(
                    f"{key}={getattr(self, key)!r} is out of range: expected {allowed}"
                )
