"""Light profiles on pixel grids, vectorised over galaxies: (n,) parameters -> (n, H, W).

Every shape is normalised to unit sum over the stamp, so multiplying by a band flux gives
the flux that lands in the cutout. Coordinates are pixels from the stamp centre.
"""

from __future__ import annotations

import numpy as np


def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (y, x) relative to the stamp centre, each (1, H, W)."""
    c = (size - 1) / 2.0
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) - c
    return y[None], x[None]


def _frame(size: int, x0, y0, pa) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates along (u) and across (v) each object's major axis, (n, H, W)."""
    y, x = grid(size)
    dx = x - np.asarray(x0, np.float32)[:, None, None]
    dy = y - np.asarray(y0, np.float32)[:, None, None]
    c = np.cos(pa).astype(np.float32)[:, None, None]
    s = np.sin(pa).astype(np.float32)[:, None, None]
    return dx * c + dy * s, -dx * s + dy * c


def _normalise(img: np.ndarray) -> np.ndarray:
    total = img.sum(axis=(1, 2), keepdims=True)
    return img / np.where(total > 0, total, 1.0)


def sersic_bn(n: np.ndarray) -> np.ndarray:
    """b_n with half the light inside R_e (Ciotti & Bertin 1999 expansion)."""
    n = np.asarray(n, np.float64)
    return 2 * n - 1 / 3 + 4 / (405 * n) + 46 / (25515 * n**2)


def sersic(size: int, x0, y0, re_px, n, q, pa) -> np.ndarray:
    """Sersic profiles I ~ exp(-b_n (r/R_e)^(1/n)) on elliptical radii (axis ratio q).

    The radius is floored at a quarter pixel: sampling a cusp at the pixel centre would put
    an arbitrary fraction of the light in one pixel; the PSF applied later erases the rest.
    """
    u, v = _frame(size, x0, y0, pa)
    q = np.asarray(q, np.float32)[:, None, None]
    re = np.asarray(re_px, np.float32)[:, None, None]
    r = np.sqrt(u**2 + (v / q) ** 2).clip(0.25)
    inv_n = (1.0 / np.asarray(n, np.float32))[:, None, None]
    bn = sersic_bn(n).astype(np.float32)[:, None, None]
    return _normalise(np.exp(-bn * ((r / re) ** inv_n - 1.0)))


def spiral_disk(size: int, x0, y0, re_px, q, pa, arms, pitch, amp, phase) -> np.ndarray:
    """Exponential disk modulated by logarithmic spiral arms, in the disk plane.

    Arms: intensity x (1 + amp w cos(m (phi - ln(r / h) / tan(pitch)) - phase)), with
    w rising from 0 in the centre so the arms start outside the bulge.
    """
    u, v = _frame(size, x0, y0, pa)
    q = np.asarray(q, np.float32)[:, None, None]
    h = (np.asarray(re_px, np.float32) / 1.678)[:, None, None]  # exp. scale length
    vd = v / q
    r = np.sqrt(u**2 + vd**2).clip(0.25)
    phi = np.arctan2(vd, u)
    m = np.asarray(arms, np.float32)[:, None, None]
    tan_p = np.tan(np.asarray(pitch, np.float32))[:, None, None]
    a = np.asarray(amp, np.float32)[:, None, None]
    ph = np.asarray(phase, np.float32)[:, None, None]
    w = 1 - np.exp(-((r / (0.8 * h)) ** 2))
    pattern = 1 + a * w * np.cos(m * (phi - np.log(r / h) / tan_p) - ph)
    return _normalise(np.exp(-r / h) * pattern.clip(0))


def gaussians(size: int, x0, y0, sigma_px, weight) -> np.ndarray:
    """Sums of round Gaussians per object: parameters (n, K), zero weight = absent."""
    y, x = grid(size)
    out = np.zeros((x0.shape[0], size, size), np.float32)
    for k in range(x0.shape[1]):
        s2 = (2 * np.asarray(sigma_px[:, k], np.float32) ** 2)[:, None, None]
        g = np.exp(-((x - x0[:, k, None, None]) ** 2 + (y - y0[:, k, None, None]) ** 2) / s2)
        out += weight[:, k, None, None] * _normalise(g)
    return _normalise(out)


def arc(size: int, x0, y0, radius_px, width_px, centre_angle, spread) -> np.ndarray:
    """Tangential arcs (or full rings when `spread` is large) about (x0, y0)."""
    y, x = grid(size)
    dx = x - np.asarray(x0, np.float32)[:, None, None]
    dy = y - np.asarray(y0, np.float32)[:, None, None]
    r = np.sqrt(dx**2 + dy**2)
    dphi = np.angle(np.exp(1j * (np.arctan2(dy, dx) - centre_angle[:, None, None])))
    radial = np.exp(-0.5 * ((r - radius_px[:, None, None]) / width_px[:, None, None]) ** 2)
    angular = np.exp(-0.5 * (dphi / spread[:, None, None]) ** 2)
    return _normalise((radial * angular).astype(np.float32))


def line(size: int, x0, y0, angle, width_px) -> np.ndarray:
    """Straight lines through (x0, y0) at `angle` with a Gaussian cross-section, peak 1."""
    u, v = _frame(size, x0, y0, angle)
    return np.exp(-0.5 * (v / np.asarray(width_px, np.float32)[:, None, None]) ** 2)


def gaussian_psf_transfer(shape: tuple[int, int], sigma_px: np.ndarray) -> np.ndarray:
    """Fourier transfer function of round Gaussian PSFs, (..., H, W//2+1) for rfft2 images."""
    ky = np.fft.fftfreq(shape[0]).astype(np.float32)[:, None]
    kx = np.fft.rfftfreq(shape[1]).astype(np.float32)[None, :]
    k2 = ky**2 + kx**2
    s2 = (np.asarray(sigma_px, np.float32) ** 2)[..., None, None]
    return np.exp(-2 * np.pi**2 * s2 * k2)
