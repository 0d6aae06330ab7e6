"""``ssl-hpc ingest``: real SDSS JPEGs and HSC FITS in, every bad input named, resume."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import h5py
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from PIL import Image

from jobs.cli import main
from ssl_hpc.data import cutouts
from ssl_hpc.data.captions import captions
from ssl_hpc.data.ingest import IngestConfig, ingest
from ssl_hpc.data.sharded_job import JobError
from ssl_hpc.data.survey import Survey
from ssl_hpc.errors import ConfigError, IngestError

BANDS3 = ("g", "r", "i")
SIZE = 24  # px of the synthetic FITS cutouts
CROP = 16


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("SSL_HPC_PROGRESS", "0")


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def read_rejects(out: Path) -> list[dict[str, str]]:
    with open(out / "rejects.csv", newline="") as f:
        return list(csv.DictReader(f))


def fake_cube(object_id: int, bands: int = 3, size: int = SIZE) -> np.ndarray:
    """Sky noise around zero plus a centred blob: negative pixels, like real data."""
    rng = np.random.default_rng(object_id)
    yy, xx = np.mgrid[:size, :size] - size // 2
    blob = 50.0 * np.exp(-(xx**2 + yy**2) / 8.0)
    return (rng.normal(0, 1.0, (bands, size, size)) + blob).astype(np.float32)


@pytest.fixture
def fits_set(tmp_path):
    """Eight good 3-band FITS cubes ``images/{id}.fits`` and a catalogue ``cat.csv``."""
    images = tmp_path / "images"
    images.mkdir()
    ids = list(range(1, 9))
    for i in ids:
        fits.writeto(images / f"{i}.fits", fake_cube(i))
    rows = [[i, 150.0 + i / 100, 2.0 - i / 100, 0.5 * i, 0.01 * i, i % 3] for i in ids]
    cat = write_csv(tmp_path / "cat.csv", ["id", "ra", "dec", "mag_r", "redshift", "kind"], rows)
    return tmp_path, images, cat


def fits_config(tmp_path: Path, **kw) -> IngestConfig:
    values = dict(
        catalog=tmp_path / "cat.csv",
        images=tmp_path / "images",
        out=tmp_path / "out",
        id_column="id",
        bands=BANDS3,
        crop=CROP,
        pixel_scale_arcsec=0.2,
        rows_per_shard=3,
    )
    values.update(kw)
    return IngestConfig(**values)


def centre(a: np.ndarray, n: int) -> np.ndarray:
    h, w = a.shape[-2:]
    return a[..., h // 2 - n // 2 : h // 2 - n // 2 + n, w // 2 - n // 2 : w // 2 - n // 2 + n]


# --------------------------------------------------------------------------- (a) SDSS JPEGs


@pytest.fixture(scope="module")
def gz1_sample(real_data, tmp_path_factory):
    """40 real Galaxy Zoo 1 galaxies (every 50th of the development sample) as a catalogue."""
    root = real_data / "gz1_sdss"
    with open(root / "labels.csv", newline="") as f:
        rows = list(csv.reader(f))
    header, rows = rows[0], rows[1:]
    cat = write_csv(tmp_path_factory.mktemp("gz1") / "labels.csv", header, rows)
    return cat, root / "images", [(int(r[0]), int(r[1])) for r in rows]


def test_real_sdss_jpegs_round_trip(gz1_sample, tmp_path):
    cat, images, rows = gz1_sample
    config = IngestConfig(
        catalog=cat,
        images=images,
        out=tmp_path / "gz1",
        id_column="objid",
        label_columns=("class",),
        bands=("i", "r", "g"),
        crop=128,
        resize=64,
        pixel_scale_arcsec=0.396,
        rows_per_shard=16,
    )
    report = ingest(config)
    assert (report.n_ingested, report.n_rejected, report.shards_written) == (40, 0, 3)
    assert report.image_format == "jpeg" and report.pattern == "{id}.jpeg"

    survey = Survey(tmp_path / "gz1", verify="full")
    m = survey.manifest
    assert m.bands == ("i", "r", "g") and m.image_shape == (3, 64, 64)
    assert m.image_dtype == "float16" and m.pixel_scale_arcsec == pytest.approx(0.792)
    assert m.columns["class"].role == "label" and "ebv" not in m.columns
    assert m.generator["command"] == "ssl-hpc ingest" and m.generator["config"]["crop"] == 128
    ids, labels = zip(*rows)
    np.testing.assert_array_equal(survey.column("object_id"), ids)
    np.testing.assert_array_equal(survey.column("class"), labels)
    assert np.isnan(survey.column("ra")).all() and np.isnan(survey.column("dec")).all()
    caps = captions(survey, np.arange(40))
    names = ("elliptical", "spiral CW", "spiral ACW", "edge-on", "don't know", "merger")
    for cap, oid, leaf in zip(caps, ids, labels):
        assert cap.startswith(f"{oid}\nclass={names[leaf]}")
    sigma = survey.per_band("image_sky_sigma")
    assert sigma.shape == (40, 3) and np.isfinite(sigma).all() and (sigma >= 0).all()

    got = survey.images(np.arange(40))
    for k, object_id in enumerate(ids):
        rgb = np.asarray(Image.open(images / f"{object_id}.jpeg"), dtype=np.float64) / 255
        crop = centre(rgb.transpose(2, 0, 1), 128)  # channel 0 = R = band i
        expect = crop.reshape(3, 64, 2, 64, 2).mean(axis=(2, 4))  # 2x2 area average
        np.testing.assert_allclose(got[k], expect, atol=1e-3)


def test_real_jpeg_crop_without_resize_is_exact_in_float32(gz1_sample, tmp_path):
    cat, images, rows = gz1_sample
    config = IngestConfig(
        catalog=cat,
        images=images,
        out=tmp_path / "o",
        id_column="objid",
        bands=("i", "r", "g"),
        crop=101,
        pixel_scale_arcsec=0.396,
        image_dtype="float32",
        rows_per_shard=64,
    )
    ingest(config)
    survey = Survey(tmp_path / "o")
    object_id = rows[7][0]
    rgb = np.asarray(Image.open(images / f"{object_id}.jpeg")).transpose(2, 0, 1) / np.float32(255)
    np.testing.assert_array_equal(survey.images([7])[0], centre(rgb, 101))


# --------------------------------------------------------------------------- (b) HSC FITS


@pytest.fixture(scope="module")
def hsc(real_data, tmp_path_factory):
    """The two real HSC g,r,i,z,y scenes as FITS cubes and as one FITS file per band."""
    root = tmp_path_factory.mktemp("hsc")
    (root / "cubes").mkdir()
    (root / "bands").mkdir()
    arrays = {}
    for object_id, name in [(101, "hsc_cosmos"), (102, "hsc_cosmos_35")]:
        data = np.load(real_data / "hsc_scarlet" / f"{name}.npz")
        arrays[object_id] = data
        fits.writeto(root / "cubes" / f"{object_id}.fits", data["images"])
        for band, plane in zip(data["filters"], data["images"]):
            fits.writeto(root / "bands" / f"{object_id}-{band}.fits", plane)
    header = ["ID", "RA", "DEC", "EBV", "field"]
    rows = [[101, 150.1, 2.2, 0.02, "cosmos"], [102, 150.3, 2.4, 0.03, "cosmos"]]
    write_csv(root / "cat.csv", header, rows)
    Table(rows=rows, names=header).write(root / "cat.fits")
    return root, arrays


@pytest.mark.parametrize(("layout", "catalog"), [("cubes", "cat.csv"), ("bands", "cat.fits")])
def test_real_hsc_fits_keep_float32_and_negative_pixels(hsc, layout, catalog, tmp_path):
    root, arrays = hsc
    config = IngestConfig(
        catalog=root / catalog,
        images=root / layout,
        out=tmp_path / "hsc",
        id_column="ID",
        bands=("g", "r", "i", "z", "y"),
        crop=48,
        pixel_scale_arcsec=0.168,
        psf_fwhm=(0.79, 0.75, 0.61, 0.68, 0.72),
        image_format="auto" if layout == "cubes" else "fits-per-band",
    )
    report = ingest(config)
    assert report.column_map == {"ra": "RA", "dec": "DEC", "ebv": "EBV"}
    assert list(report.skipped_columns) == ["field"]  # text: not numeric
    assert report.pattern == ("{id}.fits" if layout == "cubes" else "{id}-{band}.fits")
    survey = Survey(tmp_path / "hsc", verify="full")
    assert survey.manifest.image_dtype == "float32" and survey.manifest.flux_unit == "unknown"
    np.testing.assert_array_equal(survey.column("ra"), [150.1, 150.3])
    np.testing.assert_array_equal(survey.column("ebv"), [0.02, 0.03])
    np.testing.assert_allclose(survey.per_band("image_psf_fwhm")[1], [0.79, 0.75, 0.61, 0.68, 0.72])
    got = survey.images([0, 1])
    for k, object_id in enumerate([101, 102]):
        expect = centre(arrays[object_id]["images"], 48)
        np.testing.assert_array_equal(got[k], expect)
        assert (got[k] < 0).any()
    # the sky estimate agrees with the real variance map of hsc_cosmos_35 (blends inflate it)
    sigma = survey.per_band("image_sky_sigma")[1]
    noise = np.sqrt(np.median(centre(arrays[102]["variance"], 48), axis=(1, 2)))
    assert np.all((sigma > 0.7 * noise) & (sigma < 2.0 * noise))


# --------------------------------------------------------------------------- (c) bad inputs


def garbage(path: Path) -> None:
    path.write_bytes(b"this is not a FITS file " * 200)


BAD_OBJECTS = {
    # id: (how the file is broken, words the error must contain)
    2: (lambda p: p.unlink(), "missing file"),
    3: (garbage, "unreadable FITS"),
    4: (lambda p: fits.writeto(p, fake_cube(4, bands=2), overwrite=True), "image has 2 bands"),
    5: (lambda p: fits.writeto(p, fake_cube(5, size=10), overwrite=True), "smaller than the 16"),
    6: (lambda p: fits.writeto(p, nan_cube(), overwrite=True), "2 NaN and 1 inf pixels"),
}


def nan_cube() -> np.ndarray:
    cube = fake_cube(6)
    cube[0, SIZE // 2, SIZE // 2] = np.nan
    cube[1, SIZE // 2, SIZE // 2 + 1] = np.nan
    cube[2, SIZE // 2 + 1, SIZE // 2] = np.inf
    cube[0, 0, 0] = np.nan  # outside the crop: never stored, so not an error
    return cube


@pytest.mark.parametrize("object_id", sorted(BAD_OBJECTS))
def test_fail_mode_names_the_object_file_and_problem(fits_set, object_id):
    tmp_path, images, _ = fits_set
    breaker, words = BAD_OBJECTS[object_id]
    breaker(images / f"{object_id}.fits")
    with pytest.raises(IngestError) as e:
        ingest(fits_config(tmp_path, image_format="fits"))
    message = str(e.value)
    assert f"object {object_id} (" in message and f"{object_id}.fits" in message
    assert words in message


def test_skip_mode_lists_every_bad_object_and_ingests_the_rest(fits_set):
    tmp_path, images, _ = fits_set
    for object_id, (breaker, _) in BAD_OBJECTS.items():
        breaker(images / f"{object_id}.fits")
    report = ingest(fits_config(tmp_path, image_format="fits", on_error="skip"))
    assert report.n_ingested == 3 and report.n_rejected == 5
    np.testing.assert_array_equal(Survey(tmp_path / "out").column("object_id"), [1, 7, 8])
    rejects = read_rejects(tmp_path / "out")
    assert [int(r["object_id"]) for r in rejects] == sorted(BAD_OBJECTS)
    for r in rejects:
        assert r["file"].endswith(f"{r['object_id']}.fits")
        assert BAD_OBJECTS[int(r["object_id"])][1] in r["reason"]
    again = ingest(fits_config(tmp_path, image_format="fits", on_error="skip"))
    assert again.shards_skipped == 3 and read_rejects(tmp_path / "out") == rejects


def test_duplicate_ids_fail_or_are_rejected(fits_set):
    tmp_path, _, cat = fits_set
    lines = cat.read_text().splitlines()
    cat.write_text("\n".join([*lines, lines[3][:-1] + "2"]) + "\n")  # id 3 again, other kind
    with pytest.raises(IngestError, match=r"duplicated id\(s\): 3 on rows \[3, 9\]"):
        ingest(fits_config(tmp_path))
    report = ingest(fits_config(tmp_path, on_error="skip"))
    assert report.n_ingested == 7
    rejects = read_rejects(tmp_path / "out")
    assert [r["object_id"] for r in rejects] == ["3", "3"]
    assert all("duplicate id" in r["reason"] and r["file"] == str(cat) for r in rejects)


def test_missing_id_column_is_refused_in_both_modes(fits_set):
    tmp_path, _, _ = fits_set
    for mode in ("fail", "skip"):
        with pytest.raises(IngestError, match=r"no id column 'objid'; have \['id', 'ra'"):
            ingest(fits_config(tmp_path, id_column="objid", on_error=mode))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("bad_id", "words"),
    [
        ("1.5", "id 1.5 is not an integer"),
        ("abc", "id 'abc' is not an integer"),
        ("", "id is missing"),
    ],
)
def test_non_integer_or_missing_ids_fail_or_are_rejected(fits_set, bad_id, words):
    tmp_path, _, cat = fits_set
    lines = cat.read_text().splitlines()
    lines[5] = bad_id + lines[5][1:]  # data row 5 (id 5)
    cat.write_text("\n".join(lines) + "\n")
    with pytest.raises(IngestError) as e:
        ingest(fits_config(tmp_path))
    assert "id column 'id'" in str(e.value) and f"row 5: {words}" in str(e.value)
    report = ingest(fits_config(tmp_path, on_error="skip"))
    assert report.n_ingested == 7
    [reject] = read_rejects(tmp_path / "out")
    assert reject["object_id"] == "" and reject["reason"] == f"catalogue row 5: {words}"


def test_float16_overflow_is_fatal_even_in_skip_mode(fits_set):
    tmp_path, images, _ = fits_set
    fits.writeto(images / "4.fits", fake_cube(4) * 1e4, overwrite=True)
    with pytest.raises(
        IngestError, match=r"object 4 \(.*4\.fits\): pixel values up to .* overflow"
    ):
        ingest(fits_config(tmp_path, image_dtype="float16", on_error="skip"))
    # the other end: fluxes in maggies (sky noise ~1e-9) would round to zero in float16
    fits.writeto(images / "4.fits", fake_cube(4) * 1e-9, overwrite=True)
    with pytest.raises(IngestError, match=r"object 4 \(.*4\.fits\): sky noise 1.*e-09 is below"):
        ingest(fits_config(tmp_path, image_dtype="float16", on_error="skip"))
    fits.writeto(images / "4.fits", fake_cube(4) * 1e-3, overwrite=True)  # 1e-3: resolved
    assert ingest(fits_config(tmp_path, image_dtype="float16", out=tmp_path / "ok")).n_ingested == 8


def test_catalogue_columns_canonical_names_roles_and_dtypes(fits_set):
    tmp_path, _, cat = fits_set
    # "no spectrum" written as -9999 or 0 is stored as the format says: NaN
    lines = cat.read_text().splitlines()
    for row, placeholder in ((1, "-9999"), (2, "0")):
        cells = lines[row].split(",")
        cells[4] = placeholder
        lines[row] = ",".join(cells)
    cat.write_text("\n".join(lines) + "\n")
    report = ingest(fits_config(tmp_path, label_columns=("kind",)))
    assert report.column_map == {"ra": "ra", "dec": "dec", "z_spec": "redshift"}
    m = Survey(tmp_path / "out").manifest
    assert {k: (c.dtype, c.role) for k, c in m.columns.items()} == {
        "kind": ("int64", "label"),
        "mag_r": ("float64", "catalogue"),
        "z_spec": ("float64", "label"),
    }
    z = Survey(tmp_path / "out").column("z_spec")
    assert np.isnan(z[:2]).all() and z[2:] == pytest.approx(0.01 * np.arange(3, 9))
    assert m.labels["z_spec"] == 6  # and the manifest, info and outside readers count so
    assert m.image_dtype == "float32" and m.pixel_scale_arcsec == pytest.approx(0.2)
    with pytest.raises(IngestError, match="label column .nope.: not a catalogue column"):
        ingest(fits_config(tmp_path, out=tmp_path / "o2", label_columns=("nope",)))
    with pytest.raises(IngestError, match="z_spec column 'zz' not in catalogue"):
        ingest(fits_config(tmp_path, out=tmp_path / "o3", z_column="zz"))


def test_8bit_modes_and_band_counts(tmp_path):
    gray = tmp_path / "1.png"
    Image.fromarray(np.full((20, 20), 51, np.uint8)).save(gray)
    spec = cutouts.CutoutSpec(str(tmp_path), "png", "{id}.png", ("r",), crop=10)
    np.testing.assert_allclose(cutouts.load_cutout(spec, 1), 0.2)
    with pytest.raises(
        IngestError, match=r"object 1 \(.*1\.png\): wrong number of bands: image has 1"
    ):
        cutouts.load_cutout(cutouts.CutoutSpec(str(tmp_path), "png", "{id}.png", BANDS3, 10), 1)
    rgba = np.full((20, 20, 4), 255, np.uint8)
    rgba[0, 0, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "2.png")
    with pytest.raises(IngestError, match="object 2 .* transparent pixels"):
        cutouts.load_cutout(cutouts.CutoutSpec(str(tmp_path), "png", "{id}.png", BANDS3, 10), 2)
    (tmp_path / "3.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(IngestError, match=r"object 3 \(.*3\.png\): unreadable image"):
        cutouts.load_cutout(cutouts.CutoutSpec(str(tmp_path), "png", "{id}.png", BANDS3, 10), 3)


def test_area_resampling_and_sky_sigma():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(2, 12, 12)).astype(np.float32)
    mean = cutouts.resample_area(image, 4, conserve_flux=False)
    np.testing.assert_allclose(mean, image.reshape(2, 4, 3, 4, 3).mean(axis=(2, 4)), atol=1e-6)
    summed = cutouts.resample_area(image, 5, conserve_flux=True)  # non-integer factor
    np.testing.assert_allclose(summed.sum(axis=(1, 2)), image.sum(axis=(1, 2)), atol=1e-4)
    noise = rng.normal(3.0, 2.0, size=(3, 200, 200))
    np.testing.assert_allclose(cutouts.sky_sigma(noise), 2.0, rtol=0.05)


def test_config_errors_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="psf_fwhm: 2 values for 3 bands"):
        fits_config(tmp_path, psf_fwhm=(1.0, 1.1))
    with pytest.raises(ConfigError, match="on_error 'ignore'"):
        fits_config(tmp_path, on_error="ignore")


# --------------------------------------------------------------------------- (d) resume


def shard_stats(out: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(out.glob("shard-*.h5"))}


def test_failed_run_keeps_finished_shards_and_rerun_resumes(fits_set):
    tmp_path, images, _ = fits_set
    good = (images / "7.fits").read_bytes()
    garbage(images / "7.fits")  # the 3rd shard holds ids 7, 8
    out = tmp_path / "out"
    with pytest.raises(IngestError, match="object 7"):
        ingest(fits_config(tmp_path))
    assert sorted(p.name for p in out.iterdir()) == [
        "job.json",
        "shard-00000.h5",
        "shard-00000.h5.done",
        "shard-00001.h5",
        "shard-00001.h5.done",
    ]
    before = shard_stats(out)

    (images / "7.fits").write_bytes(good)
    report = ingest(fits_config(tmp_path, workers=2))  # workers is not part of the config hash
    assert (report.shards_skipped, report.shards_written, report.n_ingested) == (2, 1, 8)
    assert {k: v for k, v in shard_stats(out).items() if k in before} == before
    assert len(Survey(out, verify="full")) == 8

    with pytest.raises(JobError, match="another ssl-hpc ingest .*crop: 16 -> 12"):
        ingest(fits_config(tmp_path, crop=12))

    # a changed catalogue row redoes its shard only
    cat = tmp_path / "cat.csv"
    cat.write_text(cat.read_text().replace("\n4,", "\n40,"))
    fits.writeto(images / "40.fits", fake_cube(40))
    report = ingest(fits_config(tmp_path))
    assert (report.shards_skipped, report.shards_written) == (2, 1)
    assert shard_stats(out)["shard-00000.h5"] == before["shard-00000.h5"]
    assert 40 in Survey(out).column("object_id")


def test_pool_failure_stops_cleanly_and_pool_rerun_matches_inline(fits_set):
    tmp_path, images, _ = fits_set
    good = (images / "5.fits").read_bytes()
    garbage(images / "5.fits")  # shard 1 of 3
    out = tmp_path / "out"
    with pytest.raises(IngestError, match=r"object 5 \(.*5\.fits\): unreadable FITS"):
        ingest(fits_config(tmp_path, workers=2))
    leftovers = [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert leftovers == [] and (out / "job.json").exists()
    assert not (out / "manifest.json").exists()
    expected = {
        "shard-00000.h5": [1, 2, 3],
        "shard-00002.h5": [7, 8],
    }  # shard 2: if it won the race
    for shard in out.glob("shard-*.h5"):
        with h5py.File(shard) as f:
            assert list(f["object_id"][()]) == expected[shard.name]

    (images / "5.fits").write_bytes(good)
    ingest(fits_config(tmp_path, workers=2))
    ingest(fits_config(tmp_path, out=tmp_path / "inline"))
    pooled, inline = Survey(out, verify="full"), Survey(tmp_path / "inline")
    np.testing.assert_array_equal(pooled.images(np.arange(8)), inline.images(np.arange(8)))
    np.testing.assert_array_equal(pooled.column("object_id"), inline.column("object_id"))


def test_out_dir_of_another_survey_is_refused(fits_set):
    tmp_path, _, _ = fits_set
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    with pytest.raises(JobError, match="holds files no ssl-hpc ingest made"):
        ingest(fits_config(tmp_path))


# --------------------------------------------------------------------------- (e) the CLI


def cli_args(tmp_path: Path, out: str, *extra: str) -> list[str]:
    return [
        "ingest",
        "--catalog", str(tmp_path / "cat.csv"),
        "--images", str(tmp_path / "images"),
        "--out", str(tmp_path / out),
        "--id-column", "id",
        "--bands", "g,r,i",
        "--crop", str(CROP),
        "--pixel-scale", "0.2",
        *extra,
    ]  # fmt: skip


def test_cli_exit_codes_and_messages(fits_set, capsys):
    tmp_path, images, _ = fits_set
    garbage(images / "3.fits")
    assert main(cli_args(tmp_path, "a")) == 2
    err = capsys.readouterr().err
    assert err.startswith("ssl-hpc ingest: error: object 3 (") and "unreadable FITS" in err

    assert main(cli_args(tmp_path, "b", "--crop", "0")) == 2
    assert "crop 0: cutout files need --crop" in capsys.readouterr().err

    assert main(cli_args(tmp_path, "c", "--on-error", "skip", "--label-columns", "kind")) == 0
    out = capsys.readouterr().out
    assert "ingested 7 objects" in out and "rejected 1 objects" in out and "rejects.csv" in out
    assert Survey(tmp_path / "c").manifest.columns["kind"].role == "label"

    # every object rejected (a crop larger than the cutouts): nothing is left to resume,
    # so the corrected rerun into the same --out is not refused as another ingest's
    assert main(cli_args(tmp_path, "d", "--on-error", "skip", "--crop", "500")) == 2
    assert "no object could be ingested" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["rejects.csv"]
    assert main(cli_args(tmp_path, "d", "--on-error", "skip")) == 0
    assert "ingested 7 objects" in capsys.readouterr().out


def test_defaults_and_other_catalogue_spellings_ingest(fits_set):
    """Without --pixel-scale the cutouts are taken at SDSS's 0.396"/px (the documented
    default); a gzipped CSV and a tab-separated catalogue read as the CSV does."""
    tmp_path, _, cat = fits_set
    argv = cli_args(tmp_path, "out")
    del argv[argv.index("--pixel-scale") : argv.index("--pixel-scale") + 2]
    assert main(argv) == 0
    expected = Survey(tmp_path / "out").catalogue()
    assert Survey(tmp_path / "out").manifest.pixel_scale_arcsec == pytest.approx(0.396)
    text = cat.read_text()
    (tmp_path / "cat.csv.gz").write_bytes(gzip.compress(text.encode()))
    (tmp_path / "cat.tsv").write_text(text.replace(",", "\t"))
    for name in ("cat.csv.gz", "cat.tsv"):
        argv = cli_args(tmp_path, f"out-{name}")
        argv[argv.index("--catalog") + 1] = str(tmp_path / name)
        assert main(argv) == 0, name
        got = Survey(tmp_path / f"out-{name}").catalogue()
        assert got.keys() == expected.keys(), name
        for column, values in expected.items():
            assert np.array_equal(got[column], values), (name, column)


def test_a_partitioned_shard_whose_objects_are_all_rejected_is_left_out(fits_set):
    """Shards of 2 in one HEALPix pixel, objects 1 and 2 (the first shard) unreadable: the
    survey holds the other 6 in 3 shards and verifies; a rerun resumes to the same."""
    tmp_path, images, _ = fits_set
    (images / "1.fits").unlink()
    garbage(images / "2.fits")
    argv = cli_args(tmp_path, "out", "--rows-per-shard", "2", "--on-error", "skip")
    argv += ["--healpix-order", "3"]
    assert main(argv) == 0
    survey = Survey(tmp_path / "out")  # verifies: no shard on disk outside the manifest
    assert len(survey) == 6 and len(survey.manifest.shards) == 3
    assert {r["object_id"] for r in read_rejects(tmp_path / "out")} == {"1", "2"}
    assert main(argv) == 0
    assert Survey(tmp_path / "out").manifest == survey.manifest
