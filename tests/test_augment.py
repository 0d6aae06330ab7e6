"""Augmentations: each op against float64 numpy/scipy, the draws, the errors, the picture."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy import ndimage, special

from ssl_hpc.augment import AugmentConfig, Augmenter, SurveyStats, parse_codes, survey_stats
from ssl_hpc.augment import reference as ref
from ssl_hpc.augment.draws import (
    ViewDraws,
    ViewParams,
    discrete_gaussian,
    discrete_gaussian_exact,
    draw_views,
)
from ssl_hpc.data.reader import ShardedReader
from ssl_hpc.errors import ConfigError

SDSS_R = np.array([4.239, 3.303, 2.285, 1.698, 1.263])  # u g r i z, Schlafly & Finkbeiner 2011
STATS = SurveyStats(
    bands=tuple("ugriz"),
    noise_sigma=(0.05, 0.02, 0.03, 0.04, 0.1),
    psf_fwhm_low=(1.1, 1.0, 1.0, 0.9, 0.9),
    psf_fwhm_high=(1.9, 1.8, 1.7, 1.6, 1.6),
    extinction=tuple(SDSS_R),
    pixel_scale=0.396,
)


def images(n=3, size=107, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, size, size, generator=g, dtype=dtype)


def meta(n, psf=1.3, seed=1):
    rng = np.random.default_rng(seed)
    return {"psf_fwhm": np.full((n, 5), psf), "ebv": rng.uniform(0, 0.1, n)}


def apply(x, draws, codes, noise=None, out=64):
    params = ViewParams.from_draws(draws, "cpu", codes)
    return ref.apply_views(x, params, noise, out)


# -- codes and config -------------------------------------------------------------------------
def test_codes_parse_in_pipeline_order_and_bad_codes_are_named():
    assert parse_codes("rr,jc+GN") == ("RR", "JC", "GN")
    assert parse_codes(["PS", "GR", "RR"]) == ("GR", "PS", "RR")
    assert parse_codes("none") == ()
    with pytest.raises(ConfigError, match="'XX' unknown"):
        parse_codes("RR,XX")
    with pytest.raises(ConfigError, match="RR and RF"):
        parse_codes("RR,RF")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"out_size": 0}, "out_size"),
        ({"max_shift": -1}, "max_shift"),
        ({"ebv": (0.5, 0.1)}, "ebv"),
        ({"mask_fraction": (0.2, 1.5)}, "mask_fraction"),
        ({"codes": "RR,QQ"}, "QQ"),
    ],
)
def test_bad_config_values_are_named(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        AugmentConfig(**kwargs)


def test_geometry_refuses_windows_that_leave_the_cutout():
    AugmentConfig().check_geometry((107, 107))  # the published 107 -> 64, +-7 px, any angle
    with pytest.raises(ConfigError, match=r"rotated 80x80 window.*107x107"):
        AugmentConfig(out_size=80).check_geometry((107, 107))
    AugmentConfig(codes="JC", out_size=80).check_geometry((107, 107))  # no rotation: fits
    with pytest.raises(ConfigError, match="max_shift"):
        AugmentConfig(codes="JC", out_size=100).check_geometry((107, 107))


def test_crop_never_leaves_the_cutout_over_many_draws():
    cfg = AugmentConfig(codes="RR,JC")
    d = draw_views(cfg, STATS, np.arange(4000), None, None, seed=3, call=0)
    y, x = ref.sample_coordinates(
        torch.from_numpy(d.matrix()), torch.from_numpy(d.shift).double(), (107, 107), 64
    )
    assert y.min() >= 0 and x.min() >= 0 and y.max() <= 106 and x.max() <= 106
    # the extremes are reached: the check is not vacuous
    assert y.min() < 3 and y.max() > 103


# -- RR / RF / JC -----------------------------------------------------------------------------
def test_rotation_by_90_degrees_is_exact():
    x = images(1)
    d = ViewDraws.neutral(np.array([0]), 5)
    d.angle_deg[:] = 90.0
    view = apply(x, d, ("RR",))
    # output (i, j) samples input (53 - (j - 32), 53 + (i - 32)): a quarter turn of a crop
    expected = np.rot90(x[0].numpy()[:, 22:86, 21:85], k=-1, axes=(1, 2))
    assert np.array_equal(view[0].numpy(), expected)


def test_all_right_angles_and_flips_are_exact_and_distinct():
    x = images(1)
    crop = x[0].numpy()[:, 21:85, 21:85]
    outs = []
    for k in range(4):
        for flip in (False, True):
            d = ViewDraws.neutral(np.array([0]), 5)
            d.angle_deg[:], d.flip[:] = 90.0 * k, flip
            v = apply(x, d, ("RF",))[0].numpy()
            # every value is an input pixel: a permutation of the window, no resampling
            assert np.isin(v, x[0].numpy()).all()
            outs.append(v)
    assert np.array_equal(outs[0], crop)
    assert len({o.tobytes() for o in outs}) == 8


def test_rotation_by_any_angle_matches_scipy_bilinear():
    x = images(1)
    d = ViewDraws.neutral(np.array([0]), 5)
    d.angle_deg[:], d.flip[:], d.shift[:] = 33.7, True, (4, -6)
    view = apply(x, d, ("RR", "JC"))[0].numpy()
    t = np.deg2rad(33.7)
    i, j = np.mgrid[0:64, 0:64] - 32.0
    j = -j  # flip x first
    yy = 53 + 4 + np.cos(t) * i - np.sin(t) * j
    xx = 53 - 6 + np.sin(t) * i + np.cos(t) * j
    for b in range(5):
        expected = ndimage.map_coordinates(x[0, b].numpy(), [yy, xx], order=1)
        np.testing.assert_allclose(view[b], expected, atol=1e-5)


def test_rotation_keeps_a_round_galaxy_round():
    yy, xx = np.mgrid[0:107, 0:107] - 53.0
    blob = np.exp(-(yy**2 + xx**2) / (2 * 6.0**2))
    x = torch.from_numpy(np.broadcast_to(blob, (1, 5, 107, 107)).copy())
    d = ViewDraws.neutral(np.array([0]), 5)
    d.angle_deg[:] = 17.0
    # bilinear resampling errs by at most (1/8) |f''| per axis: 2 / (8 sigma^2) here
    np.testing.assert_allclose(apply(x, d, ("RR",))[0, 0], blob[21:85, 21:85], atol=2 / 8 / 36)


def test_jitter_crop_is_an_exact_shifted_window():
    x = images(1)
    cfg = AugmentConfig(codes="JC")
    d = draw_views(cfg, STATS, np.zeros(300, np.int64), None, None, seed=0, call=0)
    assert d.shift.min() == -7 and d.shift.max() == 7  # the whole +-7 range is drawn
    views = apply(x, d, cfg.codes)
    for v, (sy, sx) in list(zip(views, d.shift))[:20]:
        window = x[0, :, 21 + sy : 85 + sy, 21 + sx : 85 + sx]
        assert torch.equal(v, window)


# -- GR / SC ----------------------------------------------------------------------------------
def test_reddening_multiplies_each_band_by_the_extinction_factor():
    x = images(4)
    m = meta(4)
    cfg = AugmentConfig(codes="GR")
    d = draw_views(cfg, STATS, np.arange(4), m["psf_fwhm"], m["ebv"], seed=5, call=0)
    assert np.all((d.ebv >= 0) & (d.ebv <= 0.1)) and np.array_equal(d.ebv_catalogue, m["ebv"])
    views = apply(x, d, cfg.codes)
    plain = apply(x, ViewDraws.neutral(np.arange(4), 5), ())
    for v in range(4):
        # de-redden with the catalogue E(B-V), then redden with the drawn one
        expected = 10 ** (-0.4 * SDSS_R * (d.ebv[v] - m["ebv"][v]))
        ratio = (views[v] / plain[v]).reshape(5, -1).numpy()
        np.testing.assert_allclose(ratio, np.repeat(expected[:, None], ratio.shape[1], 1), 1e-6)


def test_flux_scaling_keeps_colours():
    x = images(2)
    cfg = AugmentConfig(codes="SC")
    d = draw_views(cfg, STATS, np.arange(2), None, None, seed=1, call=0)
    ratio = (apply(x, d, cfg.codes) / apply(x, ViewDraws.neutral(np.arange(2), 5), ())).numpy()
    np.testing.assert_allclose(ratio, d.flux_scale[:, None, None, None] * np.ones_like(ratio))
    assert np.all((d.flux_scale >= 0.8) & (d.flux_scale <= 1.25))


# -- PS ---------------------------------------------------------------------------------------
def test_blur_matches_scipy_with_the_discrete_gaussian():
    x = images(2, size=41)
    sigma = np.array([[0.7, 1.3, 0.0, 2.0, 0.3], [1.5, 0.4, 0.9, 0.0, 2.2]])
    taps = np.arange(-9, 10)
    kernel = special.iv(np.abs(taps), sigma[..., None] ** 2) * np.exp(-(sigma[..., None] ** 2))
    kernel /= kernel.sum(-1, keepdims=True)
    # the discrete Gaussian's variance is sigma^2 even for sigma well under a pixel (less
    # what truncation at 9 px = 4.1 sigma cuts off the widest one)
    np.testing.assert_allclose((kernel * taps**2).sum(-1), sigma**2, rtol=2e-3)
    out = ref.gaussian_blur(x, torch.from_numpy(sigma), torch.from_numpy(kernel)).numpy()
    for n in range(2):
        for b in range(5):
            if sigma[n, b] == 0:
                assert np.array_equal(out[n, b], x[n, b].numpy())
                continue
            g = ndimage.correlate1d(x[n, b].numpy(), kernel[n, b], axis=1, mode="mirror")
            g = ndimage.correlate1d(g, kernel[n, b], axis=0, mode="mirror")
            np.testing.assert_allclose(out[n, b], g, atol=1e-12)


def gaussian_star(fwhm_arcsec, scale=0.396, size=107):
    s = fwhm_arcsec / 2.3548 / scale
    yy, xx = np.mgrid[0:size, 0:size] - (size - 1) / 2
    return np.exp(-(yy**2 + xx**2) / (2 * s**2))


def measured_fwhm(img, scale=0.396):
    yy, xx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]] - (img.shape[0] - 1) / 2
    var = (img * (yy**2 + xx**2)).sum() / img.sum() / 2
    return np.sqrt(var) * 2.3548 * scale


def test_psf_smoothing_preserves_flux_and_reaches_the_target_fwhm():
    own = np.array([1.5, 1.2, 1.1, 1.0, 1.05])
    star = np.stack([gaussian_star(f) for f in own])[None]
    cfg = AugmentConfig(codes="PS")
    d = draw_views(cfg, STATS, np.zeros(8, np.int64), np.tile(own, (8, 1)), None, seed=2, call=0)
    weights = discrete_gaussian(d.blur_sigma, d.blur_radius())
    blurred = ref.gaussian_blur(
        torch.from_numpy(star[[0] * 8]), torch.from_numpy(d.blur_sigma), torch.from_numpy(weights)
    ).numpy()
    np.testing.assert_allclose(blurred.sum(axis=(2, 3)), star.sum(axis=(2, 3)).repeat(8, 0), 1e-9)
    for v in range(8):
        # targets lie in the survey range; bands already worse than the target stay as they are
        assert np.all(d.psf_target[v] >= STATS.psf_fwhm_low) and np.all(
            d.psf_target[v] <= STATS.psf_fwhm_high
        )
        for b in range(5):
            want = max(d.psf_target[v, b], own[b])
            assert measured_fwhm(blurred[v, b]) == pytest.approx(want, rel=0.01)
    assert (d.blur_sigma == 0).any() and (d.blur_sigma > 0).any()


# -- GN / PN / MK ------------------------------------------------------------------------------
def test_gaussian_noise_has_the_drawn_per_band_sigma():
    x = torch.zeros(6, 5, 107, 107, dtype=torch.float64)
    cfg = AugmentConfig(codes="GN", noise_scale=(1.0, 3.0))  # the published range
    aug = Augmenter(cfg, STATS, seed=4)
    d = aug.draw(x, None)
    views = aug.apply(x, d).double()
    scale = d.noise_sigma / np.array(STATS.noise_sigma)
    assert np.allclose(scale, scale[:, :1]) and np.all((scale >= 1) & (scale <= 3))
    default = Augmenter(AugmentConfig(codes="GN"), STATS, seed=4).draw(x, None)
    scale = default.noise_sigma / np.array(STATS.noise_sigma)
    assert np.all((scale >= 0) & (scale <= 1))  # up to the survey's own sky noise
    measured = views.std(dim=(2, 3)).numpy()
    np.testing.assert_allclose(measured / d.noise_sigma, 1.0, atol=0.06)  # 4096 px: 1.1%/sigma


def test_shot_noise_grows_with_flux():
    x = torch.full((4, 5, 107, 107), 50.0, dtype=torch.float64)
    aug = Augmenter(AugmentConfig(codes="PN", shot_noise_max=0.05), STATS, seed=0)
    d = aug.draw(x, None)
    views = aug.apply(x, d).double()
    np.testing.assert_allclose(
        views.std(dim=(2, 3)).numpy(), np.sqrt(d.shot_gain * 50.0)[:, None] * np.ones(5), 0.06
    )


def test_shot_noise_is_in_units_of_the_sky():
    """The same survey in a flux unit 1000x smaller (sky sigma and pixels alike) gets the
    same views up to that factor: shot_noise_max has no unit."""
    x = torch.full((4, 5, 107, 107), 50.0, dtype=torch.float64)
    milli = SurveyStats(
        **{**STATS.__dict__, "noise_sigma": tuple(1e-3 * v for v in STATS.noise_sigma)}
    )
    cfg = AugmentConfig(codes="PN", shot_noise_max=0.5)
    views = [
        Augmenter(cfg, st, seed=0).two_views(x * f, None)[0]
        for st, f in ((STATS, 1), (milli, 1e-3))
    ]
    np.testing.assert_allclose(views[1].numpy(), 1e-3 * views[0].numpy(), rtol=1e-4)


def test_ps_and_gr_are_refused_before_training_for_what_they_cannot_draw():
    """Found up front, not at the first batch holding such an object (a random step)."""
    for code, field, words in (
        ("PS", "objects_without_psf", "lack a finite psf_fwhm"),
        ("GR", "objects_without_ebv", r"lack a finite E\(B-V\)"),
    ):
        lacking = SurveyStats(**{**STATS.__dict__, field: 3})
        with pytest.raises(
            ConfigError, match=f"augmentation {code}: 3 of the survey's objects {words}"
        ):
            Augmenter(AugmentConfig(codes=code), lacking)
    # 0.1"/px and a 3" target: degrading a 0.5" PSF needs a 51 px kernel radius
    fine = {"pixel_scale": 0.1, "psf_fwhm_min": (0.5,) * 5, "psf_fwhm_high": (3.0,) * 5}
    aug = Augmenter(
        AugmentConfig(codes="PS", out_size=16, max_shift=0),
        SurveyStats(**{**STATS.__dict__, **fine}),
    )
    with pytest.raises(ConfigError, match="PS: .* 51 px kernel radius .* beyond the 33x33 cutouts"):
        aug.two_views(images(2, size=33), {"psf_fwhm": torch.full((2, 5), 0.5)})


def test_mask_zeroes_one_box_and_nothing_else():
    x = images(3) + 10.0
    cfg = AugmentConfig(codes="MK")
    d = draw_views(cfg, STATS, np.arange(3), None, None, seed=0, call=0)
    views = apply(x, d, cfg.codes).numpy()
    for v, (y0, x0, y1, x1) in zip(views, d.mask_box):
        assert (v[:, y0:y1, x0:x1] == 0).all()
        assert (v != 0).sum() == 5 * (64 * 64 - (y1 - y0) * (x1 - x0))
        assert 0.1 * 64 - 1 <= y1 - y0 <= 0.3 * 64 + 1


# -- the augmenter ----------------------------------------------------------------------------
def test_views_are_deterministic_with_a_seed_and_resume_from_state():
    x = images(4, dtype=torch.float32)
    m = meta(4)
    a, b = Augmenter(AugmentConfig(), STATS, seed=7), Augmenter(AugmentConfig(), STATS, seed=7)
    assert torch.equal(a(x, m), b(x, m))
    assert not torch.equal(a(x, m), Augmenter(AugmentConfig(), STATS, seed=8)(x, m))
    a(x, m)
    state = a.state_dict()
    third = a(x, m)
    c = Augmenter(AugmentConfig(), STATS, seed=0)
    c.load_state_dict(state)
    assert torch.equal(c(x, m), third)


def test_switching_one_code_off_keeps_the_other_draws():
    m = meta(16)
    full = draw_views(AugmentConfig(), STATS, np.arange(16), m["psf_fwhm"], m["ebv"], 3, 5)
    no_gn = draw_views(
        AugmentConfig(codes="RR,JC,GR,PS"), STATS, np.arange(16), m["psf_fwhm"], m["ebv"], 3, 5
    )
    assert np.array_equal(full.angle_deg, no_gn.angle_deg)
    assert np.array_equal(full.shift, no_gn.shift) and np.array_equal(full.ebv, no_gn.ebv)
    assert np.array_equal(full.blur_sigma, no_gn.blur_sigma)
    assert no_gn.noise_sigma.max() == 0 < full.noise_sigma.min()


def test_two_views_are_drawn_independently():
    x = images(8, dtype=torch.float32)
    aug = Augmenter(AugmentConfig(), STATS, seed=0)
    q, k = aug.two_views(x, meta(8))
    assert q.shape == k.shape == (8, 5, 64, 64) and q.dtype == torch.float32
    assert torch.isfinite(q).all() and not torch.equal(q, k)
    d = aug.draw(x, meta(8), views_per_image=2)
    assert np.array_equal(d.src_index, np.r_[np.arange(8), np.arange(8)])
    assert len(np.unique(d.angle_deg)) == 16


def test_bad_inputs_get_clear_errors():
    aug = Augmenter(AugmentConfig(), STATS)
    with pytest.raises(ConfigError, match=r"\(N, 5, H, W\).*\(2, 3, 107, 107\)"):
        aug(torch.zeros(2, 3, 107, 107), meta(2))
    with pytest.raises(ConfigError, match="'ebv'"):
        aug(torch.zeros(2, 5, 107, 107), {"psf_fwhm": np.ones((2, 5))})
    with pytest.raises(ConfigError, match="PSF FWHM"):
        aug(torch.zeros(2, 5, 107, 107), {"psf_fwhm": np.full((2, 5), np.nan), "ebv": [0, 0]})
    with pytest.raises(ConfigError, match="outside a 60x60 cutout"):
        aug(torch.zeros(2, 5, 60, 60), meta(2))
    with pytest.raises(ConfigError, match="backend"):
        Augmenter(AugmentConfig(), STATS, backend="cuda")
    display = SurveyStats(**{**STATS.__dict__, "linear_flux": False})
    with pytest.raises(ConfigError, match="display values"):
        Augmenter(AugmentConfig(), display)
    Augmenter(AugmentConfig(codes="RR,JC,GN"), display)  # geometric + noise are fine
    no_dust = SurveyStats(**{**STATS.__dict__, "extinction": (np.nan,) * 5})
    with pytest.raises(ConfigError, match="extinction coefficient"):
        Augmenter(AugmentConfig(), no_dust)


def test_survey_stats_and_reader_batches_feed_the_augmenter(small_survey):
    from ssl_hpc.data.survey import Survey

    survey = Survey(small_survey)
    stats = survey_stats(survey)
    sky = survey.per_band("image_sky_sigma")
    np.testing.assert_allclose(stats.noise_sigma, np.median(sky, axis=0), rtol=1e-6)
    psf = survey.per_band("image_psf_fwhm")
    np.testing.assert_allclose(stats.psf_fwhm_high, np.percentile(psf, 95, axis=0), rtol=1e-6)
    assert stats.extinction == tuple(SDSS_R) and stats.linear_flux
    np.testing.assert_allclose(stats.psf_fwhm_min, psf.min(axis=0), rtol=1e-6)
    assert stats.objects_without_psf == 0 and stats.objects_without_ebv == 0
    cfg = AugmentConfig(out_size=24, max_shift=4)  # the test survey's cutouts are 48 px
    aug = Augmenter(cfg, stats, seed=0)
    batch = next(iter(ShardedReader(survey, batch_size=16, columns=("ebv",))))
    q, k = aug.two_views(batch["image"], batch)
    assert q.shape == (16, 5, 24, 24) and torch.isfinite(q).all()
    # the galaxy is still there: the views' centres are brighter than their sky
    assert (q[:, 2, 8:16, 8:16].mean() > 5 * q[:, 2].median()).item()


def test_show_augment_draws_a_grid(small_survey, tmp_path):
    out = tmp_path / "views.png"
    cmd = [sys.executable, "-m", "jobs.cli", "show", str(small_survey), "--out", str(out)]
    bad = subprocess.run([*cmd, "--augment", "RR,XY"], capture_output=True, text=True)
    assert bad.returncode == 2 and "'XY' unknown" in bad.stderr and not out.exists()
    # the default 64 px window does not fit the 48 px test cutouts: a clear refusal
    bad = subprocess.run([*cmd, "--augment", "RR"], capture_output=True, text=True)
    assert bad.returncode == 2 and "48x48 cutout" in bad.stderr
    good = subprocess.run(
        [*cmd, "--augment", "RR,GN,GR", "--n", "3", "augment.out_size=24", "augment.max_shift=4"],
        capture_output=True,
        text=True,
    )
    assert good.returncode == 0, good.stderr
    assert "wrote 16 panels" in good.stdout  # 4 rows (3 codes + combined) x (original + 3)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tabulated_blur_kernels_match_the_exact_discrete_gaussian():
    sigma = np.random.default_rng(0).uniform(0.0, 2.0, (300, 5))
    fast, exact = discrete_gaussian(sigma, 8), discrete_gaussian_exact(sigma, 8)
    np.testing.assert_allclose(fast, exact, atol=1e-5)
    np.testing.assert_allclose(fast.sum(-1), 1.0, atol=1e-12)
    taps2 = np.arange(-8, 9) ** 2
    # the blur adds the drawn variance to within step^2 / 4 (+ truncation at 4 sigma)
    np.testing.assert_allclose((fast * taps2).sum(-1), (exact * taps2).sum(-1), atol=4e-6)
