"""The MMU tree writer: layout, schema, pixels, masks and ivar, checked with plain h5py."""

from __future__ import annotations

from pathlib import Path

import astropy.units as u
import h5py
import numpy as np
import pytest
from astropy_healpix import HEALPix

from ssl_hpc.data.survey import Survey
from ssl_hpc.data.synth.mmu_tree import draw_defects, main, write_mmu_tree
from ssl_hpc.errors import ConfigError, SurveyError


def read_tree(tree: Path) -> dict[Path, dict[str, np.ndarray]]:
    """Every file of a tree -> its datasets, read whole."""
    out = {}
    for path in sorted(tree.glob("healpix=*/001-of-001.hdf5")):
        with h5py.File(path, "r") as f:
            out[path] = {k: v[()] for k, v in f.items()}
    return out


@pytest.fixture(scope="module")
def survey(small_survey):
    s = Survey(small_survey)
    cat = s.catalogue()
    cat["sigma"] = s.per_band("image_sky_sigma")
    cat["psf"] = s.per_band("image_psf_fwhm")
    cat["images"] = s.images(np.arange(len(s)))
    return s, cat


@pytest.fixture(scope="module")
def default_tree(small_survey, tmp_path_factory):
    mmu = write_mmu_tree(small_survey, tmp_path_factory.mktemp("mmu"))
    return mmu, read_tree(mmu.root)


@pytest.fixture(scope="module")
def variant_tree(small_survey, tmp_path_factory):
    mmu = write_mmu_tree(
        small_survey,
        tmp_path_factory.mktemp("mmu-variant"),
        dataset="other",
        config="named",
        band_prefix="syn",
        id_style="name",
        mask_shape="shared",
        compression="lzf",
        include_truth=True,
        seed=3,
    )
    return mmu, read_tree(mmu.root)


def test_files_sit_in_their_nside16_nested_healpix_dirs(default_tree):
    mmu, files = default_tree
    hp = HEALPix(nside=16, order="nested")
    assert set(files) == set(mmu.files) and len(files) > 1
    assert sorted(p.name for p in mmu.root.iterdir()) == sorted(p.parent.name for p in files)
    for path, d in files.items():
        pix = hp.lonlat_to_healpix(d["ra"] * u.deg, d["dec"] * u.deg)
        assert path.parent.name == f"healpix={pix[0]}" and (pix == pix[0]).all()
        np.testing.assert_array_equal(d["healpix"], pix)
        assert mmu.files[path] == len(d["ra"])
    assert not list(mmu.root.rglob(".*"))  # no temporary files left behind
    assert max(mmu.files.values()) > 1  # some pixels hold several objects


def test_every_object_once_in_survey_order_with_decimal_ids(default_tree, survey):
    mmu, files = default_tree
    _, cat = survey
    ids = [np.array([int(b.decode()) for b in d["object_id"]]) for d in files.values()]
    for part in ids:
        assert (np.diff(part) > 0).all()  # synth ids grow with survey row
    all_ids = np.concatenate(ids)
    np.testing.assert_array_equal(np.sort(all_ids), np.sort(cat["object_id"]))
    assert mmu.n_objects == len(all_ids) == len(cat["object_id"])
    d = next(iter(files.values()))
    assert d["object_id"].dtype.kind == "S" and d["object_id"][0] == str(ids[0][0]).encode()


def test_dtypes_and_shapes_follow_the_schema(default_tree, survey):
    _, files = default_tree
    s, _ = survey
    b, h, w = s.manifest.image_shape
    for d in files.values():
        n = len(d["object_id"])
        expect = {
            "ra": ("f8", (n,)),
            "dec": ("f8", (n,)),
            "healpix": ("i8", (n,)),
            "image_array": ("f4", (n, b, h, w)),
            "image_ivar": ("f4", (n, b, h, w)),
            "image_mask": ("?", (n, b, h, w)),
            "image_psf_fwhm": ("f4", (n, b)),
            "image_scale": ("f4", (n, b)),
        }
        for name, (dtype, shape) in expect.items():
            assert (d[name].dtype, d[name].shape) == (np.dtype(dtype), shape), name
        assert d["image_band"].shape == (n, b)
        assert d["image_band"][0].tolist() == [f"sdss-{x}".encode() for x in s.bands]
        np.testing.assert_array_equal(d["image_scale"], np.float32(0.396))


def test_pixels_masks_and_ivar(default_tree, survey):
    mmu, files = default_tree
    s, cat = survey
    row_of = {int(i): r for r, i in enumerate(cat["object_id"])}
    n_bad, garbage = 0, set()
    for d in files.values():
        rows = [row_of[int(i)] for i in d["object_id"]]
        ref = cat["images"][rows]
        clean, img, ivar = d["image_mask"], d["image_array"], d["image_ivar"]
        np.testing.assert_array_equal(img[clean], ref[clean])
        np.testing.assert_array_equal(d["image_psf_fwhm"], cat["psf"][rows])
        assert (ivar[~clean] == 0).all() and (ivar[clean] > 0).all()
        bad = img[~clean]
        assert (~np.isfinite(bad) | (np.abs(bad) >= 1e4)).all()  # nothing plausible
        garbage |= {"nan" if np.isnan(x) else float(x) for x in np.unique(bad)}
        for i, row in enumerate(rows):
            n_bad += int((~clean[i]).sum())
            assert mmu.masked_pixels[int(cat["object_id"][row])] == int((~clean[i]).sum())
            for k in range(len(s.bands)):
                good = ivar[i, k][clean[i, k]]
                target = 1 / cat["sigma"][row, k].astype(np.float64) ** 2
                assert abs(np.median(good) / target - 1) < 0.005
                assert 1.02 < good.max() / good.min() < 1.12  # the smooth +-5% gradient
    n_pix = len(cat["object_id"]) * np.prod(s.manifest.image_shape)
    assert 0.001 < n_bad / n_pix < 0.05
    assert garbage == {"nan", -1e4, 1e5}
    counts = np.array(list(mmu.masked_pixels.values()))
    assert (counts == 0).any() and (counts > 0).mean() > 0.5


def test_datasets_are_chunked_by_rows_and_compressed(default_tree):
    _, files = default_tree
    path = max(files, key=lambda p: len(files[p]["ra"]))
    with h5py.File(path, "r") as f:
        for name, ds in f.items():
            assert ds.compression == "gzip", name
            assert ds.chunks == (min(ds.shape[0], 16 if ds.ndim >= 3 else 4096), *ds.shape[1:])


def test_catalogue_columns_are_upper_case_without_truth(default_tree, survey):
    mmu, files = default_tree
    _, cat = survey
    row_of = {int(i): r for r, i in enumerate(cat["object_id"])}
    names = set.union(*(set(d) for d in files.values()))
    assert {"Z", "EBV", "MAG_R", "FLUX_R", "GZ2_SMOOTH"} <= names
    assert not {n for n in names if n.startswith("truth_") or n in ("Z_TRUE", "IS_ANOMALY")}
    z = np.concatenate([d["Z"] for d in files.values()])
    rows = np.concatenate([[row_of[int(i)] for i in d["object_id"]] for d in files.values()])
    np.testing.assert_array_equal(z, cat["z_spec"][rows])  # NaN where no spectrum
    assert np.isnan(z).any() and np.isfinite(z).any()
    flux = np.concatenate([d["FLUX_R"] for d in files.values()])
    np.testing.assert_allclose(22.5 - 2.5 * np.log10(flux), cat["mag_r"][rows], atol=1e-4)
    assert mmu.columns["Z"] == "z_spec"


def test_named_ids_shared_mask_lzf_and_truth(variant_tree, survey):
    mmu, files = variant_tree
    s, cat = survey
    b = len(s.bands)
    assert mmu.root.parts[-2:] == ("other", "named")
    row_of = {int(i): r for r, i in enumerate(cat["object_id"])}
    seen = []
    for path, d in files.items():
        rows = [row_of[int(i)] for i in d["truth_object_id"]]
        seen += rows
        names = [f"SYN J{cat['ra'][r]:09.5f}{cat['dec'][r]:+09.5f}" for r in rows]
        assert [x.decode() for x in d["object_id"]] == names
        mask = d["image_mask"]
        assert mask.shape == (len(rows), *s.manifest.image_shape[1:])
        shared = np.broadcast_to(mask[:, None], d["image_ivar"].shape)
        assert (d["image_ivar"][~shared] == 0).all()
        ref = cat["images"][rows]
        np.testing.assert_array_equal(d["image_array"][shared], ref[shared])
        assert d["image_band"][0].tolist() == [f"syn-{x}".encode() for x in s.bands]
        np.testing.assert_array_equal(d["truth_z_true"], cat["z_true"][rows])
        with h5py.File(path, "r") as f:
            assert f["image_array"].compression == "lzf"
    assert sorted(seen) == list(range(len(s)))
    assert sum(mmu.masked_pixels.values()) > 0 and b > 1


def test_defects_follow_the_rate_and_the_seed():
    shape = (5, 48, 48)
    assert (draw_defects(np.random.default_rng(0), shape, 0.0) == 0).all()
    a = draw_defects(np.random.default_rng(1), shape, 1.0)
    np.testing.assert_array_equal(a, draw_defects(np.random.default_rng(1), shape, 1.0))
    few = [(draw_defects(np.random.default_rng(s), shape, 1.0) > 0).sum() for s in range(40)]
    many = [draw_defects(np.random.default_rng(s), shape, 4.0) for s in range(40)]
    assert np.mean([(c > 0).sum() for c in many]) > 2 * np.mean(few)
    yy, xx = np.mgrid[0:48, 0:48]
    n_stars = 0
    for c in many:
        star = c == 3
        np.testing.assert_array_equal(star.any(axis=0), star.all(axis=0))  # in every band
        if star.any():  # centred off the galaxy (the bleed trail may still cross it)
            n_stars += 1
            assert np.hypot(yy[star[0]].mean() - 23.5, xx[star[0]].mean() - 23.5) > 8
        assert set(np.unique(c)) <= {0, 1, 2, 3}
    assert n_stars > 10


def test_bad_input_is_one_line_and_exit_2(tmp_path, small_survey, capsys):
    assert main(["--survey", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such survey directory" in err
    with pytest.raises(ConfigError, match="id_style"):
        write_mmu_tree(small_survey, tmp_path, id_style="hex")
    (tmp_path / "ssl-synth" / "default" / "healpix=1").mkdir(parents=True)
    with pytest.raises(SurveyError, match="not empty"):
        write_mmu_tree(small_survey, tmp_path)
