"""Similarity search: exact blocked search equals brute force; the ANN index reaches
recall@10 >= 0.95 on 10^5 vectors and is cached; all-vs-all tables resume; queries by id,
position and FITS cutout, from the command line, with clear errors for bad ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from astropy.io import fits
from conftest import SMALL_SURVEY, drawn_png

from jobs.cli import main
from ssl_hpc.config import load_config
from ssl_hpc.data.synth import SynthConfig, generate_survey
from ssl_hpc.embed import EmbedOptions, embed_survey, load
from ssl_hpc.errors import SslHpcError
from ssl_hpc.search.ann import AnnConfig, AnnIndex, build_or_load, recall_at_k
from ssl_hpc.search.batch import all_neighbours, load_neighbours, source_of
from ssl_hpc.search.exact import exact_search
from ssl_hpc.search.query import QueryError, angular_sep_arcsec
from ssl_hpc.search.searcher import SearchConfig, Searcher, survey_of
from ssl_hpc.search.vectors import ArrayVectors, ShardVectors, normalise
from ssl_hpc.utils.hashing import sha256_file


def brute_topk(db: np.ndarray, q: np.ndarray, k: int, exclude=None):
    sims = normalise(q).astype(np.float64) @ normalise(db).astype(np.float64).T
    if exclude is not None:
        sims[np.arange(len(q)), exclude] = -np.inf
    rows = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, rows, 1), rows


def clustered(n: int, dim: int, seed: int, centres: int = 100, noise: float = 0.8) -> np.ndarray:
    """Vectors like representations: clumps (galaxy types) with scatter."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, dim))
    return (c[rng.integers(0, centres, n)] + noise * rng.normal(size=(n, dim))).astype(np.float32)


@pytest.fixture(scope="module")
def emb(small_survey, tmp_path_factory):
    from test_embed import make_checkpoint

    root = tmp_path_factory.mktemp("search")
    ckpt = make_checkpoint(root / "encoder.pt", seed=0)
    out = root / "emb"
    embed_survey(ckpt, small_survey, out, EmbedOptions(batch_size=128))
    return out, ckpt


def test_blocked_exact_search_equals_numpy_brute_force():
    db = clustered(5000, 64, seed=1)
    q = clustered(40, 64, seed=2)
    # blocks of 700 rows: the top k must be merged across 8 blocks
    sims, rows = exact_search(ArrayVectors(db), q, 10, block_rows=700)
    want_s, want_r = brute_topk(db, q, 10)
    np.testing.assert_array_equal(rows, want_r)
    np.testing.assert_allclose(sims, want_s, atol=1e-5)
    # leaving each query's own row out (all-vs-all): queries are database rows
    own = np.arange(0, 4000, 100)
    sims, rows = exact_search(ArrayVectors(db), db[own], 5, own, block_rows=700)
    want_s, want_r = brute_topk(db, db[own], 5, own)
    np.testing.assert_array_equal(rows, want_r)
    assert not (rows == own[:, None]).any()


def test_shard_vectors_read_the_set_without_loading_it(emb):
    out, _ = emb
    es = load(out)
    ids, vecs = es.load()
    sv = ShardVectors(es)
    assert len(sv) == len(ids) and np.array_equal(sv.object_id, ids)
    rows = np.array([383, 0, 47, 48, 200, 47])  # across shards, unsorted, repeated
    np.testing.assert_allclose(sv.take(rows), normalise(vecs[rows]), atol=1e-6)
    sims, got = exact_search(sv, vecs[:7], 6, block_rows=30)  # blocks inside 48-row shards
    want_s, want_r = brute_topk(vecs, vecs[:7], 6)
    np.testing.assert_array_equal(got, want_r)


@pytest.mark.parametrize("kind", ["ivfpq", "hnsw"])
def test_ann_recall_at_10_on_1e5_vectors(kind, tmp_path):
    # overlapping clumps (scatter 1.2 x the spread of their centres): not an easy case
    both = clustered(100_300, 64, seed=3, centres=300, noise=1.2)
    db, q = both[:100_000], both[100_000:]  # queries: fresh draws, not database rows
    vectors = ArrayVectors(db)
    _, exact = exact_search(vectors, q, 10)
    index = AnnIndex.build(vectors, AnnConfig(kind=kind))
    sims, rows = index.search(q, 10)
    recall = recall_at_k(rows, exact)
    print(f"{kind} recall@10 = {recall:.4f}")
    assert recall >= 0.95
    # what is returned is the exact similarity of what was found
    np.testing.assert_allclose(
        sims, np.sum(normalise(q)[:, None] * vectors.take(rows), -1), atol=1e-4
    )


def test_ann_index_is_cached_and_rebuilt_when_the_set_changes(tmp_path):
    vectors = ArrayVectors(clustered(4000, 32, seed=5))
    source = {"sha256": "a"}
    first, info = build_or_load(vectors, tmp_path, AnnConfig(nprobe=8), source)
    assert not info["cached"] and info["bytes"] > 0 and info["build_seconds"] > 0
    again, info = build_or_load(vectors, tmp_path, AnnConfig(nprobe=16), source)
    assert info["cached"] and again.config.nprobe == 16  # a search knob needs no rebuild
    # an index built before 2026-12-08 (its old source record) is kept, and its record
    # brought up to date
    new = {"sha256": "c"}
    _, info = build_or_load(vectors, tmp_path, AnnConfig(), new, legacy=source)
    assert info["cached"] and json.loads((tmp_path / "ivfpq.json").read_text())["source"] == new
    _, info = build_or_load(vectors, tmp_path, AnnConfig(), {"sha256": "b"}, legacy=source)
    assert not info["cached"]
    assert not list(tmp_path.glob("*.tmp*"))


def test_all_vs_all_table_equals_brute_force_and_resumes(emb, tmp_path):
    src, _ = emb
    out = tmp_path / "emb"
    shutil.copytree(src, out)
    es = load(out)
    manifest = all_neighbours(es, 5, block_rows=100, query_chunk=20)
    assert manifest["n_rows"] == 384 and len(manifest["files"]) == 8
    table = load_neighbours(es)
    ids, vecs = es.load()
    _, want = brute_topk(vecs, vecs, 5, np.arange(len(vecs)))
    np.testing.assert_array_equal(table["neighbour_row"], want)
    np.testing.assert_array_equal(table["neighbour_id"], ids[want])
    # lose one file: the rerun recomputes it alone (the others keep their mtime)
    nn = out / "neighbours"
    kept = {p.name: p.stat().st_mtime_ns for p in nn.glob("nn-*.h5")}
    (nn / "nn-00003.h5").unlink()
    all_neighbours(es, 5, block_rows=100)
    for name, t in kept.items():
        assert ((nn / name).stat().st_mtime_ns == t) == (name != "nn-00003.h5")
    with h5py.File(nn / "nn-00003.h5") as f:
        np.testing.assert_array_equal(f["neighbour_row"][()], want[144:192])
    with pytest.raises(SslHpcError, match="top-5 neighbours, asked for top-7"):
        all_neighbours(es, 7)
    # k beyond the set's other objects: refused before the directory is claimed for it
    fresh = tmp_path / "fresh"
    shutil.copytree(src, fresh, ignore=shutil.ignore_patterns("neighbours"))
    with pytest.raises(SslHpcError, match=r"k 384: expected 1..383"):
        all_neighbours(load(fresh), 384)
    assert not (fresh / "neighbours").exists()
    assert source_of(es) == json.loads((nn / "manifest.json").read_text())["source"]
    # a set moved, its manifest rewritten by a rerun of embed (other timings): the same
    # vectors, so the table is kept
    moved = tmp_path / "moved"
    shutil.move(out, moved)
    record = json.loads((moved / "manifest.json").read_text())
    record["ranks"] = [{**r, "seconds": r["seconds"] + 1} for r in record["ranks"]]
    (moved / "manifest.json").write_text(json.dumps(record))
    kept = {p.name: p.stat().st_mtime_ns for p in (moved / "neighbours").glob("nn-*.h5")}
    all_neighbours(load(moved), 5)
    assert kept == {p.name: p.stat().st_mtime_ns for p in (moved / "neighbours").glob("nn-*.h5")}
    np.testing.assert_array_equal(load_neighbours(load(moved))["neighbour_row"], want)


def test_a_neighbour_table_from_before_the_content_key_is_kept(emb, tmp_path, monkeypatch):
    """Tables written until 2026-12-08 were keyed by manifest.json's sha256: while that
    holds they are resumed and read, not deleted and recomputed."""
    import ssl_hpc.search.batch as batch

    src, _ = emb
    out = tmp_path / "emb"
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("neighbours", "index"))
    monkeypatch.setattr(batch, "source_of", batch.legacy_source_of)
    all_neighbours(load(out), 5)
    monkeypatch.undo()
    nn = out / "neighbours"
    (nn / "nn-00002.h5").unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in nn.glob("nn-*.h5")}
    all_neighbours(load(out), 5)
    assert {n: (nn / n).stat().st_mtime_ns for n in kept} == kept
    assert (nn / "nn-00002.h5").is_file() and len(load_neighbours(load(out))["object_id"]) == 384


def test_a_set_is_searched_only_beside_the_survey_it_embeds(emb, tmp_path):
    """Synthetic surveys all number their objects 1..N, so ids and counts match; the
    survey's content hash recorded at embedding tells them apart."""
    out, _ = emb
    other = tmp_path / "other"
    generate_survey(SynthConfig(**{**SMALL_SURVEY, "seed": 8}), other)
    with pytest.raises(SslHpcError, match="embeds another survey than"):
        survey_of(load(out), other)
    # probe took the other survey's labels for these galaxies' (it compared ids only)
    args = ["probe", "--embeddings", str(out), "--data", str(other), "--out", str(tmp_path / "p")]
    assert main(args) == 2
    assert not (tmp_path / "p").exists()


def test_a_survey_is_known_by_its_content_not_its_manifest_file(emb, small_survey, tmp_path):
    """A copy whose manifest.json was rewritten (another generator record, as a rerun that
    regenerated a shard to the same bytes writes) is the survey the set embeds; a set from
    before the content hash, which recorded manifest.json's sha256, is checked as it was."""
    out, _ = emb
    copy = tmp_path / "copy"
    shutil.copytree(small_survey, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["generator"]["seconds"] = 12345.0
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert survey_of(load(out), copy).root == copy
    # the survey given as a probe's --out: refused before its config.yaml is replaced
    config = (copy / "config.yaml").read_bytes()
    args = ["probe", "--embeddings", str(out), "--data", str(copy), "--task", "photoz"]
    assert main([*args, "--out", str(copy)]) == 2
    assert (copy / "config.yaml").read_bytes() == config
    old = tmp_path / "old-set"
    shutil.copytree(out, old)
    record = json.loads((old / "manifest.json").read_text())
    del record["survey_content_sha256"]
    record["survey_sha256"] = sha256_file(Path(small_survey) / "manifest.json")
    (old / "manifest.json").write_text(json.dumps(record))
    assert survey_of(load(old), small_survey).root == Path(small_survey)
    # the survey moved since: the path run.json names is not found, and --data is the way
    run = json.loads((old / "run.json").read_text())
    (old / "run.json").write_text(json.dumps({**run, "survey": str(tmp_path / "moved-away")}))
    with pytest.raises(SslHpcError, match=r"moved-away: no such survey .*give --data if it moved"):
        survey_of(load(old), None)
    with pytest.raises(SslHpcError, match="embeds another survey than"):
        survey_of(load(old), copy)
    # a run.json that is not a record names itself (search, serve and report read it)
    for garbage, why in (("{not json", "unreadable"), ("[1, 2]", "malformed")):
        (old / "run.json").write_text(garbage)
        with pytest.raises(SslHpcError, match=f"old-set/run.json: {why}"):
            survey_of(load(old), None)


def test_another_commands_output_is_refused_as_out(emb, small_survey, tmp_path, capsys):
    """probe, report, search, finetune and tune given a pretraining run as --out wrote their
    config.yaml over the run's, which then refused to resume; each command's directory is
    known by its mark, and only its own command writes there."""
    out, ckpt = emb
    run = tmp_path / "run"
    run.mkdir()
    (run / "survey.json").write_text("{}")  # what claim_run marks a training run with
    (run / "config.yaml").write_text("arch: resnet18\n")
    sets = ["--embeddings", str(out), "--data", str(small_survey)]
    for argv in (
        ["probe", *sets, "--task", "photoz"],
        ["report", *sets],
        ["search", *sets, "--query", str(load(out).object_ids()[0])],
        ["finetune", "--checkpoint", str(ckpt), "--data", str(small_survey)],
        ["tune", "--data", str(small_survey), "--config", "jobs/configs/tune-ablation.yaml"],
    ):
        assert main([*argv, "--out", str(run)]) == 2, argv[0]
        err = capsys.readouterr().err
        assert f"--out {run}: holds a training run (ssl-hpc pretrain) (survey.json)" in err
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "survey.json"]
    assert (run / "config.yaml").read_text() == "arch: resnet18\n"
    # a report's directory is its own to rewrite, and no probe's
    (tmp_path / "report" / "index.html").parent.mkdir()
    (tmp_path / "report" / "index.html").write_text("<html>")
    assert main(["probe", *sets, "--task", "photoz", "--out", str(tmp_path / "report")]) == 2
    assert "holds a report (ssl-hpc report) (index.html)" in capsys.readouterr().err
    # --out under a file: the path and the filesystem's word, not a traceback
    query = ["search", *sets, "--query", str(load(out).object_ids()[0])]
    assert main([*query, "--out", str(run / "survey.json" / "sub")]) == 2
    assert capsys.readouterr().err.strip().endswith("survey.json/sub: Not a directory")


def test_a_survey_given_as_the_embeddings_is_named(small_survey, capsys):
    """--data and --embeddings swapped: a clear line, not a KeyError from the manifest."""
    args = ["search", "--embeddings", str(small_survey), "--data", str(small_survey)]
    assert main([*args, "--query", "1"]) == 2
    err = capsys.readouterr().err
    assert f"{small_survey}: a survey, not an embedding set (give it as --data" in err
    assert "Traceback" not in err


def test_an_embedding_set_given_as_the_survey_is_named(emb, tmp_path, capsys):
    """The other way round (info, embed, pretrain, show): not a KeyError on schema_version."""
    out, ckpt = emb
    for argv in (
        ["info", str(out)],
        ["embed", "--checkpoint", str(ckpt), "--data", str(out), "--out", str(tmp_path / "e")],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"{out}: an embedding set, not a survey (give it as --embeddings" in err
    assert main(["info", str(ckpt)]) == 2
    assert f"{ckpt}: a file, not a survey directory" in capsys.readouterr().err


def test_queries_by_id_position_and_fits(emb, small_survey, tmp_path):
    out, ckpt = emb
    es = load(out)
    survey = survey_of(es, None)  # the survey named in run.json
    searcher = Searcher(es, survey)
    ids = searcher.catalogue.columns["object_id"]
    ra, dec = searcher.catalogue.columns["ra"], searcher.catalogue.columns["dec"]
    q = searcher.by_id(int(ids[10]))
    table = searcher.table(q, 5)
    assert [t["rank"] for t in table] == [1, 2, 3, 4, 5] and q.row not in [t["row"] for t in table]
    assert table == sorted(table, key=lambda t: -t["similarity"])
    # the same from the memory-mapped shards (what a set too large for RAM uses)
    from_disk = Searcher(es, survey, in_memory_bytes=0)
    assert isinstance(from_disk.vectors, ShardVectors)
    assert [t["row"] for t in from_disk.table(q, 5)] == [t["row"] for t in table]
    with pytest.raises(QueryError, match="object_id 999999999 not in the embedding set"):
        searcher.by_id(999999999)
    # 1 arcsec off object 10 finds it; 1 degree off finds nothing within 3 arcsec
    p = searcher.by_position(float(ra[10]), float(dec[10]) + 1 / 3600)
    assert p.row == 10
    with pytest.raises(QueryError, match="no object within 3.0 arcsec"):
        searcher.by_position((float(ra[10]) + 1) % 360, float(dec[10]))
    with pytest.raises(QueryError, match="expected 0 <= ra < 360"):
        searcher.by_position(400.0, 0.0)
    assert angular_sep_arcsec(np.array([10.0]), np.array([0.0]), 10.0, 1 / 3600)[
        0
    ] == pytest.approx(1.0)
    # a FITS cutout of object 10 embeds back onto object 10
    image = survey.images(np.array([10]))[0]
    cube = tmp_path / "cutout.fits"
    header = fits.Header({"CDELT2": survey.manifest.pixel_scale_arcsec / 3600})
    fits.PrimaryHDU(image, header).writeto(cube)
    f = searcher.by_fits(cube)
    assert float(f.vector @ q.vector) > 0.9999 and f.row is None
    assert searcher.table(f, 1)[0]["row"] == 10
    # bad cutouts: wrong band count, wrong pixel scale, NaNs in the middle
    fits.PrimaryHDU(image[:3]).writeto(tmp_path / "three.fits")
    with pytest.raises(QueryError, match="3 image plane.*5 bands"):
        searcher.by_fits(tmp_path / "three.fits")
    fits.PrimaryHDU(image, fits.Header({"CDELT2": 1 / 3600})).writeto(tmp_path / "scale.fits")
    with pytest.raises(QueryError, match="pixel scale 1 arcsec"):
        searcher.by_fits(tmp_path / "scale.fits")
    holed = image.copy()
    holed[:, 24, 24] = np.nan
    fits.PrimaryHDU(holed).writeto(tmp_path / "nan.fits")
    with pytest.raises(QueryError, match="NaN or infinite"):
        searcher.by_fits(tmp_path / "nan.fits")
    with pytest.raises(SslHpcError, match="--k 0"):
        searcher.search(q, 0)
    # the encoder a FITS query is embedded by must be the set's: a copy of it is, another
    # network's vectors live in another space
    from test_embed import make_checkpoint

    copy = Path(shutil.copy(ckpt, tmp_path / "moved.pt"))
    assert Searcher(es, survey, checkpoint=copy).by_fits(cube).vector @ q.vector > 0.9999
    other = make_checkpoint(tmp_path / "other.pt", seed=1)
    with pytest.raises(SslHpcError, match=r"other.pt: not the encoder \S+ was embedded with"):
        Searcher(es, survey, checkpoint=other).by_fits(cube)
    # a set that records no encoder's sha256 (bench/stand_in_embeddings.py's) takes any
    record = json.loads((out / "manifest.json").read_text())
    stand_in = tmp_path / "stand-in"
    shutil.copytree(out, stand_in, ignore=shutil.ignore_patterns("index", "neighbours"))
    (stand_in / "manifest.json").write_text(json.dumps({**record, "checkpoint_sha256": None}))
    assert Searcher(load(stand_in), survey, checkpoint=other).by_fits(cube).row is None


def test_search_command_writes_table_and_grid(emb, tmp_path, capsys):
    out, _ = emb
    ids = load(out).object_ids()
    res = tmp_path / "res"
    args = ["search", "--embeddings", str(out), "--query", str(ids[3]), "--k", "6"]
    assert main([*args, "--out", str(res)]) == 0
    table = (res / f"object-{ids[3]}.csv").read_text().splitlines()
    assert len(table) == 7 and table[0].startswith("rank,object_id,similarity,ra,dec")
    drawn_png(res / f"object-{ids[3]}.png")
    assert load_config(SearchConfig, res / f"object-{ids[3]}.yaml", []).k == 6
    printed = capsys.readouterr().out
    assert "6 most similar to object" in printed and "exact search" in printed
    # the same neighbours through the IVF-PQ index (384 vectors: exact after re-ranking)
    assert main([*args, "--out", str(tmp_path / "res-ann"), "--index", "ivfpq"]) == 0
    ann_table = (tmp_path / "res-ann" / f"object-{ids[3]}.csv").read_text().splitlines()
    assert [r.split(",")[1] for r in ann_table] == [r.split(",")[1] for r in table]
    assert (out / "index" / "ivfpq.faiss").exists()
    said = capsys.readouterr()
    assert "ivfpq" in said.out  # and one line of ours on the small codebook, not FAISS's 64
    assert said.err.count("ivfpq: 384 training vectors for 256-entry codebooks") == 1
    # an unknown id: exit 2, naming the id and the set
    assert main(["search", "--embeddings", str(out), "--query", "12345678"]) == 2
    err = capsys.readouterr().err
    assert "object_id 12345678 not in the embedding set" in err and str(out) in err
    assert main(["search", "--embeddings", str(out), "--ra", "10"]) == 2
    assert "--ra and --dec go together" in capsys.readouterr().err
    # --all writes beside the set: an --out it would ignore is refused, not dropped
    assert main(["search", "--embeddings", str(out), "--all", "--out", str(tmp_path / "x")]) == 2
    assert "--all writes its table into EMB/neighbours/" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
