"""Ingest of array inputs: Multimodal Universe trees (made by the MMU tree writer from the
documented schema) and plain array HDF5 files (NCHW and NHWC), HEALPix-partitioned shards
and the cone search over them."""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path

import astropy.units as u
import h5py
import numpy as np
import pytest
from astropy_healpix import HEALPix

from jobs.cli import main
from ssl_hpc.data.ingest import IngestConfig, ingest
from ssl_hpc.data.ingest.catalogue import stable_ids
from ssl_hpc.data.ingest.pixels import READ_ROWS
from ssl_hpc.data.manifest import verify_survey
from ssl_hpc.data.survey import Survey
from ssl_hpc.data.synth.mmu_tree import write_mmu_tree
from ssl_hpc.errors import IngestError


def read_mmu(root: Path) -> dict[str, np.ndarray]:
    """Every MMU file under `root` read whole and concatenated, in file order."""
    parts: dict[str, list] = {}
    for path in sorted(root.rglob("healpix=*/*.hdf5")):
        with h5py.File(path, "r") as f:
            for k in ("object_id", "ra", "dec", "image_array", "image_ivar", "image_mask"):
                parts.setdefault(k, []).append(f[k][()])
            parts.setdefault("image_psf_fwhm", []).append(f["image_psf_fwhm"][()])
    return {k: np.concatenate(v) for k, v in parts.items()}


def shard_rows(out: Path) -> dict[str, np.ndarray]:
    """The ingested survey's arrays, concatenated in shard order."""
    s = Survey(out)
    cat = s.catalogue()
    cat["images"] = s.images(np.arange(len(s)))
    cat["sigma"] = s.per_band("image_sky_sigma")
    cat["psf"] = s.per_band("image_psf_fwhm")
    return cat


@pytest.fixture(scope="module")
def mmu(small_survey, tmp_path_factory):
    """A decimal-id MMU tree with per-band masks, and its ingest (all bands, whole image)."""
    root = tmp_path_factory.mktemp("mmu")
    tree = write_mmu_tree(small_survey, root / "tree", band_prefix="hsc")
    out = root / "survey"
    report = ingest(IngestConfig(images=str(root / "tree"), out=str(out), rows_per_shard=100))
    return tree, read_mmu(root / "tree"), out, report


def test_mmu_ingest_verifies_and_maps_bands_ids_and_columns(mmu, small_survey):
    tree, raw, out, report = mmu
    assert report.image_format == "mmu" and report.n_rejected == 0
    assert main(["info", str(out)]) == 0 and verify_survey(out) == []
    m = report.manifest
    original = Survey(small_survey).manifest
    assert m.bands == original.bands  # b"hsc-g" ... -> g ...
    assert m.image_shape == original.image_shape and m.image_dtype == "float32"
    assert m.pixel_scale_arcsec == pytest.approx(original.pixel_scale_arcsec)
    assert {"z_spec", "ebv", "flux_g", "source_id", "n_masked_pixels"} <= set(m.columns)
    assert m.columns["z_spec"].role == "label"  # MMU's upper-case Z, found as z_spec
    got = shard_rows(out)
    names = [b.decode() for b in got["source_id"]]
    assert names == [b.decode() for b in raw["object_id"]]  # ids round-trip to the strings
    assert np.array_equal(got["object_id"], [int(n) for n in names])  # decimal: kept as is
    assert np.array_equal(got["psf"], raw["image_psf_fwhm"])


def test_mmu_masked_pixels_never_reach_the_shards(mmu):
    tree, raw, out, _ = mmu
    got = shard_rows(out)
    clean = raw["image_mask"] & (raw["image_ivar"] > 0) & np.isfinite(raw["image_array"])
    assert (~clean).sum() > 1000  # the tree has cosmic rays, bad columns, saturated stars
    images = got["images"]
    assert np.array_equal(images[clean], raw["image_array"][clean])
    assert np.isfinite(images).all()
    # filled with local sky plus noise at the band's level: never the raw garbage
    sigma = np.broadcast_to(got["sigma"][..., None, None], images.shape)
    assert (np.abs(images[~clean]) < 8 * sigma[~clean]).mean() > 0.99
    assert np.abs(images[~clean]).max() < 1e3 < np.nanmax(np.abs(raw["image_array"][~clean]))
    assert np.array_equal(got["n_masked_pixels"], (~clean).sum(axis=(1, 2, 3)))
    assert {int(k): v for k, v in tree.masked_pixels.items()} == dict(
        zip(got["object_id"].tolist(), got["n_masked_pixels"].tolist())
    )


def test_mmu_noise_level_is_one_over_sqrt_median_ivar(mmu):
    _, raw, out, _ = mmu
    got = shard_rows(out)
    ivar = np.where(raw["image_mask"], raw["image_ivar"], np.nan)
    expected = 1 / np.sqrt(np.nanmedian(ivar.reshape(*ivar.shape[:2], -1), axis=2))
    np.testing.assert_allclose(got["sigma"], expected, rtol=0.01)


def test_mmu_band_subset_name_ids_shared_mask_and_resampling(small_survey, tmp_path):
    write_mmu_tree(
        small_survey, tmp_path / "tree", id_style="name", mask_shape="shared", include_truth=True
    )
    raw = read_mmu(tmp_path / "tree")
    base = dict(images=str(tmp_path / "tree"), bands=("r", "sdss-g"))
    a = ingest(IngestConfig(**base, out=str(tmp_path / "a"), rows_per_shard=64))
    ingest(IngestConfig(**base, out=str(tmp_path / "b"), rows_per_shard=1000))
    assert a.manifest.bands == ("r", "g")
    ga, gb = shard_rows(tmp_path / "a"), shard_rows(tmp_path / "b")
    names = raw["object_id"]
    assert np.array_equal(ga["source_id"], names) and (ga["object_id"] < 0).all()
    assert np.array_equal(ga["object_id"], stable_ids(names))
    assert np.array_equal(ga["object_id"], gb["object_id"])  # the same id every time
    clean = raw["image_mask"][:, None] & (raw["image_ivar"] > 0)  # shared mask, all bands
    order = [2, 1]  # r, g of u g r i z
    assert np.array_equal(
        ga["images"][clean[:, order]], raw["image_array"][:, order][clean[:, order]]
    )
    # resampled to twice the pixel scale from image_scale: 48 px -> 24 px, flux summed
    scale = float(raw_scale(tmp_path / "tree"))
    c = ingest(IngestConfig(**base, out=str(tmp_path / "c"), out_pixel_scale=2 * scale, crop=0))
    assert c.manifest.image_shape == (2, 24, 24)
    assert c.manifest.pixel_scale_arcsec == pytest.approx(2 * scale)
    gc = shard_rows(tmp_path / "c")
    np.testing.assert_allclose(
        gc["images"].sum(axis=(2, 3)), ga["images"].sum(axis=(2, 3)), rtol=1e-4, atol=1e-3
    )
    # white noise summed over 2x2 pixels doubles its sigma
    np.testing.assert_allclose(gc["sigma"], 2 * ga["sigma"], rtol=1e-5)


def raw_scale(tree: Path) -> float:
    path = next(tree.rglob("*.hdf5"))
    with h5py.File(path, "r") as f:
        return float(f["image_scale"][0, 0])


@pytest.mark.parametrize("damage", ["no image_band", "band count", "unreadable chunk"])
def test_mmu_bad_file_names_it_and_skip_keeps_the_rest(mmu, tmp_path, damage):
    tree, raw, _, _ = mmu
    root = tmp_path / "tree"
    shutil.copytree(tree.root.parent.parent, root)
    files = sorted(root.rglob("healpix=*/*.hdf5"))
    sizes = {p: h5py.File(p, "r")["object_id"].shape[0] for p in files}
    victim = max(files, key=lambda p: (sizes[p], str(p)))  # a file with several objects
    with h5py.File(victim, "r+") as f:
        if damage == "no image_band":
            del f["image_band"]
        elif damage == "band count":
            band = f["image_band"][()]
            del f["image_band"]
            f["image_band"] = band[:, :-1]
        else:
            offset = f["image_array"].id.get_chunk_info(0).byte_offset
    if damage == "unreadable chunk":
        with open(victim, "r+b") as fh:
            fh.seek(offset + 64)
            fh.write(b"\xff" * 256)
    with pytest.raises(IngestError, match=str(victim)):
        ingest(IngestConfig(images=str(root), out=str(tmp_path / "failed")))
    report = ingest(IngestConfig(images=str(root), out=str(tmp_path / "out"), on_error="skip"))
    lost = len(raw["object_id"]) - report.n_ingested
    assert 0 < lost <= sizes[victim]
    assert report.rejects and all(r.file == str(victim) for r in report.rejects)
    if damage == "unreadable chunk":  # only the rows of the bad chunk, one reject each
        assert report.n_rejected == lost and all(r.object_id is not None for r in report.rejects)
    else:  # a schema problem loses the whole file, listed once
        assert lost == sizes[victim] and report.rejects[0].object_id is None
    assert verify_survey(tmp_path / "out") == []


def write_array_file(survey: Path, path: Path, channels_last: bool, chunk_rows: int = 16):
    """Hayat et al.-style array HDF5 from a survey: `images` plus catalogue columns."""
    s = Survey(survey)
    images = s.images(np.arange(len(s)))
    if channels_last:
        images = np.moveaxis(images, 1, -1)
    with h5py.File(path, "w") as f:
        f.create_dataset(
            "images", data=images, chunks=(chunk_rows, *images.shape[1:]), compression="gzip"
        )
        f["objid"] = s.column("object_id")
        f["ra"], f["dec"] = s.column("ra"), s.column("dec")
        f["z"] = s.column("z_spec")
    return s


@pytest.mark.parametrize("axis_order", ["NCHW", "NHWC"])
def test_array_hdf5_ingest_both_axis_orders(small_survey, tmp_path, axis_order):
    path = tmp_path / "sdss.h5"
    s = write_array_file(small_survey, path, axis_order == "NHWC")
    config = IngestConfig(
        images=str(path),
        out=str(tmp_path / "out"),
        image_format="hdf5",
        bands=s.bands,
        z_column="z",
    )
    report = ingest(config)
    assert report.image_format == "hdf5" and report.n_ingested == len(s)
    got = shard_rows(tmp_path / "out")
    assert np.array_equal(got["object_id"], s.column("object_id"))
    assert np.array_equal(got["images"], s.images(np.arange(len(s))))
    assert np.array_equal(got["z_spec"], s.column("z_spec"), equal_nan=True)


def test_array_hdf5_is_read_in_blocks_never_whole(small_survey, tmp_path, monkeypatch):
    path = tmp_path / "big.h5"
    s = write_array_file(small_survey, path, channels_last=False)
    reads: list[int] = []
    original = h5py.Dataset.__getitem__

    def spy(self, key):
        data = original(self, key)
        if self.name == "/images":
            reads.append(data.shape[0])
        return data

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    ingest(
        IngestConfig(
            images=str(path),
            out=str(tmp_path / "out"),
            image_format="hdf5",
            bands=s.bands,
            rows_per_shard=1000,
        )
    )
    assert max(reads) <= READ_ROWS < len(s) and sum(reads) == len(s)


def test_array_hdf5_ambiguous_axes_ask_for_the_order(tmp_path):
    path = tmp_path / "cube.h5"
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((4, 3, 8, 3), np.float32)
        f["object_id"] = np.arange(4)
    with pytest.raises(IngestError, match=r"cube\.h5.*--axis-order"):
        ingest(
            IngestConfig(
                images=str(path),
                out=str(tmp_path / "o"),
                image_format="hdf5",
                bands=("g", "r", "i"),
            )
        )


def test_array_hdf5_columns_of_another_length_are_named(tmp_path):
    """A catalogue dataset one short of the images was left out silently: ra became NaN
    (and the summary still said ra <- ra), z vanished, a short id column read as absent."""
    path = tmp_path / "cube.h5"
    config = IngestConfig(
        images=str(path), out=str(tmp_path / "o"), image_format="hdf5", bands=("g", "r", "i")
    )
    for name, message in (
        ("ra", "ra has 19 values for 20 images; a catalogue column has one per image"),
        ("Z", "Z has 19 values for 20 images"),
        ("objid", "objid has 19 values for 20 images"),
    ):
        with h5py.File(path, "w") as f:
            f["images"] = np.ones((20, 3, 8, 8), np.float32)
            f["object_id" if name != "objid" else "other"] = np.arange(20)
            f[name] = np.arange(19.0)
        with pytest.raises(IngestError, match=rf"cube\.h5: {message}"):
            ingest(config)
    # another dataset of another length (per-band metadata, a redshift grid beside the
    # z_spec column that is read) is left out, and said so
    with h5py.File(path, "w") as f:
        f["images"] = np.ones((20, 3, 8, 8), np.float32)
        f["object_id"] = np.arange(20)
        f["wavelength"] = np.array([477.0, 623.0, 763.0])
        f["z_spec"], f["z"] = np.full(20, 0.1), np.linspace(0, 0.4, 180)
    report = ingest(config)
    assert report.n_ingested == 20 and report.column_map["z_spec"] == "z_spec"
    assert report.skipped_columns["wavelength"] == f"{path}: 3 values for 20 images"
    assert report.skipped_columns["z"] == f"{path}: 180 values for 20 images"


@contextmanager
def files_opened():
    """The names of the HDF5 files opened inside the block, in order."""
    opened: list[str] = []
    original = h5py.File.__init__

    def spy(self, name, *args, **kwargs):
        if isinstance(name, str | Path):
            opened.append(Path(name).name)
        original(self, name, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(h5py.File, "__init__", spy)
        yield opened


def test_healpix_partition_and_cone_search_opens_only_matching_shards(mmu, tmp_path):
    tree, raw, _, _ = mmu
    out = tmp_path / "survey"
    report = ingest(IngestConfig(images=str(tree.root), out=str(out), healpix_order=3))
    m = report.manifest
    assert m.partition == {"scheme": "healpix", "order": 3, "nest": True}
    s = Survey(out)
    got = s.catalogue(["healpix"])
    hp = HEALPix(nside=8, order="nested")
    expected = hp.lonlat_to_healpix(got["ra"] * u.deg, got["dec"] * u.deg)
    assert np.array_equal(got["healpix"], expected)
    for entry, offset, size in zip(m.shards, s.shard_offsets, s.shard_sizes):
        assert (got["healpix"][offset : offset + size] == entry.healpix).all()
    i = 17
    with files_opened() as opened:
        cone = s.cone(float(got["ra"][i]), float(got["dec"][i]), 30.0)
    assert cone.object_id[0] == got["object_id"][i] and cone.sep_arcsec[0] < 1e-6
    holding = {e.file for e in m.shards if e.healpix == got["healpix"][i]}
    assert holding <= set(opened) and set(opened) == set(cone.shards_read)
    assert len(opened) < len(m.shards) / 4  # only the pixels the 30" cone touches


def test_position_search_on_a_partitioned_survey_opens_only_the_cone_shards(mmu, tmp_path):
    from test_export import write_set

    from ssl_hpc.embed import load
    from ssl_hpc.search.searcher import Searcher

    tree, _, _, _ = mmu
    out = tmp_path / "survey"
    ingest(IngestConfig(images=str(tree.root), out=str(out), healpix_order=3))
    emb = write_set(out, tmp_path / "emb")
    searcher = Searcher(load(emb), Survey(out))
    cat = Survey(out).catalogue(["healpix"])
    i = 101
    with files_opened() as opened:
        query = searcher.by_position(float(cat["ra"][i]), float(cat["dec"][i]) + 0.5 / 3600)
    assert query.row == i and str(cat["object_id"][i]) in query.label
    shards = {e.file for e in Survey(out).manifest.shards if e.healpix == cat["healpix"][i]}
    assert set(opened) >= shards and len(opened) < len(Survey(out).manifest.shards) / 4
    ra, dec = float(cat["ra"][i]), float(cat["dec"][i])
    args = ["search", "--embeddings", str(emb), "--ra", str(ra), "--dec", str(dec)]
    assert main([*args, "--out", str(tmp_path / "q"), "--k", "5"]) == 0


def test_web_page_api_serves_hashed_string_ids_exactly(small_survey, tmp_path):
    """MMU name ids become negative 63-bit integers, beyond JavaScript's exact 2**53: the
    API takes them as queries and returns each id also as exact text for the page."""
    from fastapi.testclient import TestClient
    from test_export import write_set

    from ssl_hpc.embed import load
    from ssl_hpc.search.searcher import Searcher
    from ssl_hpc.serve.app import create_app
    from ssl_hpc.serve.state import ServeState

    write_mmu_tree(small_survey, tmp_path / "tree", id_style="name", bad_pixels=0)
    ingest(IngestConfig(images=str(tmp_path / "tree"), out=str(tmp_path / "survey")))
    emb = write_set(tmp_path / "survey", tmp_path / "emb")
    state = ServeState(Searcher(load(emb), Survey(tmp_path / "survey")), log=lambda *_: None)
    token = "t" * 20
    with TestClient(
        create_app(state, token=token), headers={"Authorization": f"token {token}"}
    ) as c:
        big = int(Survey(tmp_path / "survey").column("object_id")[3])
        assert big < -(2**53)
        page = c.get("/api/search", params={"object_id": str(big), "k": 3}).json()
        assert page["query"]["id"] == str(big) and len(page["results"]) == 3
        for card in page["results"]:
            assert int(card["id"]) == card["object_id"] and card["image"].endswith(
                f"/{card['id']}.png"
            )
            assert c.get(card["image"]).status_code == 200
