"""The shard format: round trip, manifest, verification, corruption and truncation."""

from __future__ import annotations

import json
import re
import shutil

import h5py
import numpy as np
import pytest
from conftest import rewrite_shard

from ssl_hpc.data import format as fmt
from ssl_hpc.data.manifest import load_manifest, verify_survey
from ssl_hpc.data.shards import ShardTable, SurveyMeta, build_manifest, write_shard
from ssl_hpc.data.survey import Survey
from ssl_hpc.downstream.tasks import PHOTOZ, indices_of_ids, load_task
from ssl_hpc.errors import SurveyError

META = SurveyMeta(survey="toy", bands=("g", "r", "i"), image_size=(8, 8), image_dtype="float32")


def table(n: int, start: int, rng: np.random.Generator) -> ShardTable:
    return ShardTable(
        object_id=np.arange(start, start + n, dtype=np.int64),
        ra=rng.uniform(0, 360, n),
        dec=rng.uniform(-90, 90, n),
        images=rng.normal(size=(n, 3, 8, 8)).astype(np.float32),
        psf_fwhm=np.full((n, 3), 1.2, np.float32),
        sky_sigma=np.full((n, 3), 0.05, np.float32),
        columns={
            "z_spec": np.where(rng.random(n) < 0.5, rng.random(n), np.nan).astype(np.float32),
            "ebv": rng.uniform(0, 0.1, n).astype(np.float32),
        },
    )


@pytest.fixture
def toy(tmp_path):
    rng = np.random.default_rng(0)
    tables = [table(5, 100, rng), table(7, 200, rng)]
    entries = [
        write_shard(tmp_path / fmt.SHARD_PATTERN.format(index=i), t, META)
        for i, t in enumerate(tables)
    ]
    build_manifest(tmp_path, META, entries, {"command": "test"})
    return tmp_path, tables


def test_round_trip_preserves_every_dataset(toy):
    path, tables = toy
    s = Survey(path, verify="full")
    assert len(s) == 12 and s.bands == ("g", "r", "i")
    ids = np.concatenate([t.object_id for t in tables])
    np.testing.assert_array_equal(s.column("object_id"), ids)
    np.testing.assert_array_equal(
        s.column("z_spec"), np.concatenate([t.columns["z_spec"] for t in tables])
    )
    rows = s.locate([203, 101])
    np.testing.assert_array_equal(rows, [8, 1])
    np.testing.assert_array_equal(
        s.images(rows), np.stack([tables[1].images[3], tables[0].images[1]])
    )
    with h5py.File(path / "shard-00000.h5") as f:
        assert [b.decode() for b in f[fmt.BANDS][()]] == ["g", "r", "i"]
        assert f[fmt.IMAGE].chunks == (1, 3, 8, 8)  # one object per chunk: cheap random reads
        assert f.attrs["schema_version"] == fmt.SCHEMA_VERSION


def test_manifest_counts_labels_and_roles(toy):
    path, tables = toy
    m = load_manifest(path)
    d = json.loads((path / "manifest.json").read_text())
    assert d["schema_version"] == fmt.SCHEMA_VERSION and d["n_objects"] == 12
    n_z = sum(int(np.isfinite(t.columns["z_spec"]).sum()) for t in tables)
    assert m.labels == {"z_spec": n_z} and d["labels"] == {"z_spec": n_z}
    assert m.columns["ebv"].role == "catalogue" and m.columns["ebv"].n_valid == 12
    assert [s.n_rows for s in m.shards] == [5, 7]
    assert verify_survey(path) == []


def test_unknown_object_id_and_bad_rows_are_named(toy):
    with pytest.raises(SurveyError, match="object_id 999"):
        Survey(toy[0]).locate([100, 999])
    with pytest.raises(SurveyError, match="row -1 outside 0..11"):
        Survey(toy[0]).images([0, -1])


def test_ids_must_be_unique_across_shards(tmp_path):
    rng = np.random.default_rng(3)
    entries = [
        write_shard(tmp_path / fmt.SHARD_PATTERN.format(index=i), table(4, 10 + 2 * i, rng), META)
        for i in range(2)
    ]
    with pytest.raises(SurveyError, match="object_id 12 appears in more than one shard"):
        build_manifest(tmp_path, META, entries)


def test_flipped_byte_is_caught_by_sha256_and_names_the_shard(toy):
    path, _ = toy
    shard = path / "shard-00001.h5"
    data = bytearray(shard.read_bytes())
    data[-100] ^= 0xFF
    shard.write_bytes(bytes(data))
    problems = verify_survey(path, full=True)
    assert len(problems) == 1 and "shard-00001.h5" in problems[0] and "sha256" in problems[0]
    with pytest.raises(SurveyError, match="shard-00001.h5"):
        Survey(path, verify="full")


def test_corrupt_image_chunk_fails_on_read_with_the_file_name(toy):
    """Fletcher-32 on each image chunk turns silent corruption into an error naming the file."""
    path, _ = toy
    shard = path / "shard-00000.h5"
    with h5py.File(shard) as f:
        offset = f[fmt.IMAGE].id.get_chunk_info(2).byte_offset
    data = bytearray(shard.read_bytes())
    data[offset + 10] ^= 0xFF
    shard.write_bytes(bytes(data))
    survey = Survey(path, verify="none")
    survey.images([0, 1])  # other chunks still read
    with pytest.raises(SurveyError, match="shard-00000.h5"):
        survey.images([2])


def test_truncated_missing_and_stray_shards_are_named(toy):
    path, _ = toy
    shard = path / "shard-00000.h5"
    shard.write_bytes(shard.read_bytes()[:1000])
    with pytest.raises(SurveyError, match=r"shard-00000.h5: 1000 bytes"):
        Survey(path)
    (path / "shard-00001.h5").unlink()
    shutil.copy(path / "manifest.json", path / "shard-00009.h5")
    problems = verify_survey(path, full=False)
    assert any("shard-00001.h5: missing" in p for p in problems)
    assert any("shard-00009.h5: shard not in the manifest" in p for p in problems)


def test_bad_manifest_and_directory_errors(tmp_path):
    with pytest.raises(SurveyError, match="no such survey directory"):
        load_manifest(tmp_path / "nope")
    with pytest.raises(SurveyError, match="manifest.json: missing"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(SurveyError, match="not valid JSON"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(SurveyError, match="newer than this ssl-hpc"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": 1}))
    with pytest.raises(SurveyError, match="malformed manifest"):
        load_manifest(tmp_path)


def test_a_shard_that_disagrees_with_its_manifest_is_named_on_open(toy):
    """Readers trust the manifest's bands, dtype and rows; a shard written otherwise (by
    another team's writer) is refused on open, naming the shard and what differs, instead
    of feeding mislabelled bands or failing later inside HDF5."""
    path, _ = toy

    def replace(name, change):
        """An edit for `rewrite_shard`: dataset `name` rewritten as change(its values)."""

        def edit(f):
            values = change(f[name][()])
            del f[name]
            f.create_dataset(name, data=values)

        return edit

    rewrite_shard(path, "shard-00000.h5", replace("image_band", lambda b: b[[1, 0, 2]]))
    with pytest.raises(
        SurveyError, match=r"shard-00000.h5: image_band \['r', 'g', 'i'\], manifest"
    ):
        Survey(path)
    cases = [
        ("z_spec", lambda z: z[:-2], "shard-00001.h5: 'z_spec' has 5 rows, object_id 7"),
        (
            "image_array",
            lambda x: x.astype(np.float16),
            "image_array is float16, manifest image_dtype float32",
        ),
        (
            "ebv",
            lambda e: e.astype(np.float64),
            "shard-00001.h5: column 'ebv' is float64, manifest float32",
        ),
        ("object_id", lambda i: i.astype(np.int32), "object_id is int32, expected int64"),
        ("object_id", lambda i: i.astype(np.float64), "object_id is float64, expected int64"),
    ]
    for name, change, problem in cases:
        rewrite_shard(path, "shard-00001.h5", replace(name, change))
        assert any(problem in p for p in verify_survey(path)), (name, verify_survey(path))


def test_repeated_object_ids_are_named_by_info_and_by_the_first_lookup(toy):
    """Ids repeated across shards (two ingests of overlapping catalogues merged by hand)
    make every id-keyed join (labels, embeddings, search) pick one copy silently. The
    full check (`ssl-hpc info`) and the first lookup by id name the first few ids and the
    shards holding them; the cheap check on open reads no ids."""
    path, tables = toy
    first, second = (t.object_id for t in tables)
    task = load_task(Survey(path), PHOTOZ)
    labelled = Survey(path).column("object_id")[task.rows[:1]]
    assert len(indices_of_ids(task, Survey(path), labelled)) == 1  # unique ids: found
    repeated = np.concatenate([first, first[:1], second[6:]])  # all of shard 0's, one twice

    def edit(f):
        del f["object_id"]
        f["object_id"] = repeated

    rewrite_shard(path, "shard-00001.h5", edit)
    expected = (
        f"{path}: 5 object_id(s) occur more than once ({first[0]} in shard-00000.h5 x1, "
        f"shard-00001.h5 x2; {first[1]} in shard-00000.h5 x1, shard-00001.h5 x1; {first[2]} "
    )
    [problem] = verify_survey(path, full=True)
    assert problem.startswith(expected) and problem.endswith(
        ", ...); ids must be unique over the survey"
    )
    assert verify_survey(path, full=False) == []
    survey = Survey(path)
    with pytest.raises(SurveyError, match=re.escape(expected)):
        survey.locate(second[6:])
    with pytest.raises(SurveyError, match=re.escape(expected)):  # a label study's test set
        indices_of_ids(task, Survey(path), labelled)


def test_manifest_entries_with_unknown_keys_or_roles_are_named(toy):
    path, _ = toy
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["columns"]["ebv"]["unit"] = "mag"
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SurveyError, match=r"column 'ebv': unknown key\(s\) \['unit'\]"):
        load_manifest(path)
    del manifest["columns"]["ebv"]["unit"]
    manifest["columns"]["ebv"]["role"] = "input"
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SurveyError, match="column 'ebv': role 'input', expected one of"):
        load_manifest(path)


def test_writer_rejects_bad_tables_and_leaves_nothing(tmp_path):
    rng = np.random.default_rng(1)
    t = table(4, 0, rng)
    t.images[1, 0, 2, 2] = np.nan
    with pytest.raises(SurveyError, match="NaN or inf"):
        write_shard(tmp_path / "shard-00000.h5", t, META)
    t = table(4, 0, rng)
    t.object_id[3] = 0
    with pytest.raises(SurveyError, match="duplicate"):
        write_shard(tmp_path / "shard-00000.h5", t, META)
    t = table(4, 0, rng)
    t.images = t.images * 1e6
    with pytest.raises(SurveyError, match="overflow float16"):
        write_shard(tmp_path / "shard-00000.h5", t, SurveyMeta("toy", ("g", "r", "i"), (8, 8)))
    assert list(tmp_path.iterdir()) == []  # no shard and no temporary file left behind


def test_float16_quantisation_is_far_below_the_noise(tmp_path):
    """The same survey stored as float16 and as float32: rounding to float16 moves a faint
    pixel (within 5 sky sigma) by under 1% of the noise, and a bright one by under 2^-11 of
    its value."""
    from conftest import SMALL_SURVEY

    from ssl_hpc.data.synth import SynthConfig, generate_survey

    stored = {}
    for dtype in ("float16", "float32"):
        keys = {**SMALL_SURVEY, "n_objects": 48, "workers": 1, "image_dtype": dtype}
        generate_survey(SynthConfig(**keys), tmp_path / dtype)
        with h5py.File(tmp_path / dtype / "shard-00000.h5", "r") as f:
            assert f[fmt.IMAGE].dtype == np.dtype(dtype)
        stored[dtype] = Survey(tmp_path / dtype).images(np.arange(48)).astype(np.float64)
    half, full = stored["float16"], stored["float32"]
    sigma = Survey(tmp_path / "float32").per_band(fmt.SKY_SIGMA)[:48].astype(np.float64)
    sigma = np.broadcast_to(sigma[:, :, None, None], full.shape)
    error = np.abs(half - full)
    faint = np.abs(full) < 5 * sigma
    assert faint.mean() > 0.5 and (error > 0).any()  # mostly sky, and float16 did round
    assert (error[faint] / sigma[faint]).max() < 0.01
    assert (error[~faint] / np.abs(full[~faint])).max() <= 2.0**-11


def test_big_endian_datasets_are_read_in_native_byte_order(tmp_path):
    """FITS columns are big-endian, and a survey written from them by another tool keeps
    that: torch refuses such arrays, so pretraining failed in its workers."""
    import torch

    from ssl_hpc.data.survey import open_shard, read_rows

    with h5py.File(tmp_path / "be.h5", "w") as f:
        f.create_dataset("object_id", data=np.arange(5, dtype=">i8"))
        f.create_dataset("ebv", data=np.linspace(0, 1, 5).astype(">f4"))
    with open_shard(tmp_path / "be.h5") as f:
        ids, ebv = read_rows(f, "object_id", np.array([4, 0])), read_rows(f, "ebv", np.arange(5))
    assert ids.dtype == np.int64 and ids.dtype.isnative and ids.tolist() == [4, 0]
    assert ebv.dtype == np.float32 and ebv.dtype.isnative
    assert torch.from_numpy(ebv).tolist() == pytest.approx(np.linspace(0, 1, 5).tolist())
