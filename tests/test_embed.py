"""Survey embedding: 2 MPI ranks equal one process; a killed rank's rerun completes only the
missing shards; another checkpoint is refused; a corrupt shard is detected and redone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, rewrite_shard, skip_or_fail

from ssl_hpc.augment.stats import sdss_like_stats
from ssl_hpc.config import build
from ssl_hpc.data.synth import SynthConfig, generate_survey
from ssl_hpc.embed import EmbeddingError, EmbedOptions, embed_survey, load
from ssl_hpc.errors import SslHpcError
from ssl_hpc.train.config import PretrainConfig
from ssl_hpc.train.export import write_untrained_encoder

CONFIG = {
    "arch": "resnet18",
    "batch_size": 16,
    "queue_size": 64,
    "augment.out_size": 24,
    "augment.max_shift": 4,
}


def make_checkpoint(path, seed: int):
    config = build(PretrainConfig, {**CONFIG, "seed": seed})
    return write_untrained_encoder(path, config, sdss_like_stats())


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "encoder.pt", seed=0)


@pytest.fixture(scope="module")
def single(checkpoint, small_survey, tmp_path_factory):
    """The reference: one process, in-process call."""
    out = tmp_path_factory.mktemp("emb") / "single"
    manifest = embed_survey(checkpoint, small_survey, out, EmbedOptions(batch_size=64, pca_dims=8))
    return out, manifest


def mpiexec():
    exe = shutil.which(
        "mpiexec", path=os.pathsep.join([str(REPO / ".venv" / "bin"), os.environ.get("PATH", "")])
    )
    if exe is None:
        skip_or_fail("no mpiexec on PATH (pip install mpich)")
    return exe


def run_mpi(checkpoint, survey, out, n=2):
    env = {**os.environ, "SSL_HPC_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    cmd = [
        mpiexec(),
        "-n",
        str(n),
        sys.executable,
        "-m",
        "jobs.cli",
        "embed",
        "--checkpoint",
        str(checkpoint),
        "--data",
        str(survey),
        "--out",
        str(out),
        "--batch-size",
        "32",
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def test_single_process_set_is_complete_and_aligned(single, small_survey):
    from ssl_hpc.data.survey import Survey

    out, manifest = single
    emb = load(out, verify="full")
    ids, vecs = emb.load()
    assert np.array_equal(ids, Survey(small_survey).column("object_id"))
    assert vecs.shape == (384, 512) and np.isfinite(vecs).all()
    assert manifest["n_objects"] == 384 and len(manifest["shards"]) == 8
    assert np.array_equal(emb.memmap(1), vecs[48:96])  # memory-mapped, no copy
    pca = emb.pca()
    assert pca["components"].shape == (8, 512) and manifest["pca"]["dims"] == 8


@pytest.mark.services
def test_two_mpi_ranks_equal_one_process(single, checkpoint, small_survey, tmp_path):
    out = tmp_path / "mpi"
    r = run_mpi(checkpoint, small_survey, out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "on 2 rank(s)" in r.stdout
    # the merged options the command ran with are recorded beside the vectors
    assert json.loads((out / "run.json").read_text())["options"]["batch_size"] == 32
    ids1, x1 = load(single[0]).load()
    ids2, x2 = load(out, verify="full").load()
    assert np.array_equal(ids1, ids2)
    np.testing.assert_allclose(x2, x1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(load(out).texture(), load(single[0]).texture(), rtol=1e-4, atol=1e-4)
    ranks = json.loads((out / "manifest.json").read_text())["ranks"]
    assert sorted(r["embedded"] for r in ranks) == [192, 192]  # balanced by rows


@pytest.mark.services
def test_a_survey_of_one_shard_embeds_on_two_ranks(checkpoint, tmp_path):
    """A small survey someone else wrote as one shard: the second rank idles, it is not
    an error (training ranks must step together; inference ranks need not)."""
    survey = tmp_path / "one-shard"
    generate_survey(SynthConfig(n_objects=40, image_size=32, rows_per_shard=64, workers=1), survey)
    r = run_mpi(checkpoint, survey, tmp_path / "emb")
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = json.loads((tmp_path / "emb" / "manifest.json").read_text())["ranks"]
    assert sorted(r["embedded"] for r in ranks) == [0, 40]
    assert len(load(tmp_path / "emb", verify="full")) == 40


@pytest.mark.services
def test_healpix_partitioned_survey_two_ranks_equal_one_process(checkpoint, tmp_path):
    survey = tmp_path / "hpx"
    config = SynthConfig(
        n_objects=160,
        image_size=32,
        rows_per_shard=32,
        healpix_order=3,
        footprint=(150.0, 165.0, 0.0, 12.0),
        workers=1,
    )
    m = generate_survey(config, survey)
    sizes = [s.n_rows for s in m.shards]
    assert m.partition and len({s.healpix for s in m.shards}) >= 3 and min(sizes) < max(sizes)
    embed_survey(checkpoint, survey, tmp_path / "one", EmbedOptions(batch_size=64))
    r = run_mpi(checkpoint, survey, tmp_path / "two")
    assert r.returncode == 0, r.stderr[-3000:]
    ids1, x1 = load(tmp_path / "one").load()
    ids2, x2 = load(tmp_path / "two", verify="full").load()
    assert np.array_equal(ids1, ids2)
    np.testing.assert_allclose(x2, x1, rtol=1e-5, atol=1e-5)


@pytest.mark.services
def test_killed_rank_then_rerun_completes_only_the_missing_shards(
    single, checkpoint, small_survey, tmp_path
):
    out = tmp_path / "resume"
    script = REPO / "tests" / "scripts" / "embed_killed_after.py"
    env = {**os.environ, "SSL_HPC_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    cmd = [mpiexec(), "-n", "2", sys.executable, str(script), "1"]
    cmd += [str(checkpoint), str(small_survey), str(out)]
    dead = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert dead.returncode != 0
    assert not (out / "manifest.json").exists()
    # finished = renamed and recorded; a rank killed between the two leaves a shard to redo
    finished = {
        p.name: p.stat().st_mtime_ns
        for p in out.glob("emb-*.h5")
        if p.with_name(p.name + ".done").exists()
    }
    assert 1 <= len(finished) < 8
    again = run_mpi(checkpoint, small_survey, out)
    assert again.returncode == 0, again.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert sum(r["embedded"] for r in manifest["ranks"]) == 384 - 48 * len(finished)
    for name, mtime in finished.items():  # kept, not redone
        assert (out / name).stat().st_mtime_ns == mtime
    np.testing.assert_allclose(
        load(out, "full").load()[1], load(single[0]).load()[1], rtol=1e-5, atol=1e-5
    )


def test_another_checkpoint_is_refused(single, small_survey, tmp_path):
    other = make_checkpoint(tmp_path / "other.pt", seed=1)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.cli",
            "embed",
            "--checkpoint",
            str(other),
            "--data",
            str(small_survey),
            "--out",
            str(single[0]),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "another ssl-hpc embed" in r.stderr and str(single[0]) in r.stderr
    with pytest.raises(SslHpcError, match="missing: no encoder checkpoint"):
        embed_survey(tmp_path / "missing", small_survey, single[0])


def test_a_set_begun_before_the_content_hash_resumes_on_its_survey(
    checkpoint, small_survey, tmp_path, monkeypatch
):
    """Sets begun before 2026-12-08 named their survey by manifest.json's sha256: a rerun
    keeps their finished shards rather than refusing the directory as another run's; a
    survey whose manifest.json differs is still refused."""
    import ssl_hpc.embed.run as embed_run
    from ssl_hpc.utils.hashing import sha256_file

    def legacy_identity(*args):
        identity = dict(new_identity(*args))
        del identity["survey_content_sha256"]
        return {**identity, "survey_sha256": sha256_file(Path(small_survey) / "manifest.json")}

    new_identity = embed_run.run_identity
    monkeypatch.setattr(embed_run, "run_identity", legacy_identity)
    out = tmp_path / "old"
    embed_survey(checkpoint, small_survey, out)
    (out / "emb-00002.h5").unlink()  # killed before its shard was written
    monkeypatch.undo()
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("emb-*.h5")}
    manifest = embed_survey(checkpoint, small_survey, out)
    assert manifest["survey_sha256"] and "survey_content_sha256" not in manifest
    assert {n: (out / n).stat().st_mtime_ns for n in kept} == kept
    assert (out / "emb-00002.h5").is_file() and len(load(out)) == 384
    copy = tmp_path / "copy"
    shutil.copytree(small_survey, copy)
    (copy / "manifest.json").write_text((copy / "manifest.json").read_text() + " ")
    with pytest.raises(SslHpcError, match="holds the outputs of another ssl-hpc embed"):
        embed_survey(checkpoint, copy, out)


def test_embed_size_sets_the_window_every_stage_embeds_through(small_survey, tmp_path):
    """A run's embed_size, not its view size, is the centred window `embed` (and search,
    and the studies' linear heads) put through the encoder; one that does not fit the
    cutouts is refused before anything is written."""
    import torch

    from ssl_hpc.data.survey import Survey
    from ssl_hpc.models.checkpoint import EncoderCheckpoint
    from ssl_hpc.models.inference import centre_crops, embed

    config = build(PretrainConfig, {**CONFIG, "embed_size": 40})
    path = write_untrained_encoder(tmp_path / "wide.pt", config, sdss_like_stats())
    ckpt = EncoderCheckpoint(path)
    assert (ckpt.crop, config.augment.out_size) == (40, 24)
    out = tmp_path / "wide"
    embed_survey(path, small_survey, out, EmbedOptions(batch_size=64, precision="fp32"))
    _, vecs = load(out).load()
    survey = Survey(small_survey)
    with torch.no_grad():
        ref = embed(ckpt.encoder(), centre_crops(survey, np.arange(len(survey)), 40), "cpu")
        views = embed(ckpt.encoder(), centre_crops(survey, np.arange(len(survey)), 24), "cpu")
    np.testing.assert_allclose(vecs, ref.numpy(), rtol=1e-4, atol=1e-4)
    assert not np.allclose(vecs, views.numpy(), atol=1e-2)

    too_wide = build(PretrainConfig, {**CONFIG, "embed_size": 48})
    path = write_untrained_encoder(tmp_path / "too_wide.pt", too_wide, sdss_like_stats())
    with pytest.raises(SslHpcError, match="embed_size.*48 px window does not fit.*48x48"):
        embed_survey(path, small_survey, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()


def renamed_bands(survey: Path, dest: Path, bands: list[str]) -> Path:
    """A copy of `survey` at `dest` whose shards and manifest name its bands `bands`."""
    shutil.copytree(survey, dest)

    def rename(f):
        del f["image_band"]
        f["image_band"] = np.array(bands, dtype="S")

    for shard in sorted(p.name for p in dest.glob("shard-*.h5")):
        rewrite_shard(dest, shard, rename)
    manifest = json.loads((dest / "manifest.json").read_text())
    (dest / "manifest.json").write_text(json.dumps({**manifest, "bands": bands}))
    return dest


def test_an_encoder_refuses_a_survey_in_other_bands(checkpoint, small_survey, tmp_path):
    """An SDSS ugriz encoder fed an HSC-like grizy survey has five channels either way and
    would embed g through its u filters without error: refused, naming both band lists,
    before anything is written. A file from before encoders recorded their bands is
    checked by count only."""
    import torch

    from ssl_hpc.models.checkpoint import EncoderCheckpoint

    assert EncoderCheckpoint(checkpoint).bands == tuple("ugriz")
    grizy = renamed_bands(small_survey, tmp_path / "grizy", list("grizy"))
    with pytest.raises(
        SslHpcError, match=rf"trained on bands u,g,r,i,z, {grizy} has g,r,i,z,y: a survey in"
    ):
        embed_survey(checkpoint, grizy, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    old = torch.load(checkpoint, weights_only=True)
    del old["bands"]
    torch.save(old, tmp_path / "old.pt")
    assert EncoderCheckpoint(tmp_path / "old.pt").bands is None
    embed_survey(tmp_path / "old.pt", grizy, tmp_path / "old", EmbedOptions(precision="fp32"))
    assert load(tmp_path / "old").load()[1].shape[0] == 384


def test_texture_is_the_chosen_stages_channel_statistics(checkpoint, small_survey, tmp_path):
    """The stored texture is each channel's mean and spread over the chosen stage's feature
    map of the same centre crop the representation comes from; stage 0 stores none, and a
    stage the encoder does not have is refused, naming the option, before anything is
    written."""
    import torch

    from ssl_hpc.data.survey import Survey
    from ssl_hpc.models.checkpoint import EncoderCheckpoint
    from ssl_hpc.models.inference import centre_crops

    out = tmp_path / "stage2"
    embed_survey(checkpoint, small_survey, out, EmbedOptions(precision="fp32", texture_stage=2))
    emb = load(out)
    _, vecs = emb.load()
    texture = emb.texture()
    assert emb.manifest["texture"] == 2 and texture.shape == (384, 2 * 128)

    encoder = EncoderCheckpoint(checkpoint).encoder()
    rows = np.arange(0, 384, 7)
    with torch.no_grad():
        x = centre_crops(Survey(small_survey), rows, 24)
        maps = encoder.stages[:2](encoder.stem(encoder.input(x))).numpy()
        np.testing.assert_allclose(vecs[rows], encoder(x).numpy(), rtol=1e-4, atol=1e-4)
    flat = maps.reshape(len(rows), 128, -1)
    expected = np.concatenate([flat.mean(2), flat.std(2, ddof=1)], axis=1)
    np.testing.assert_allclose(texture[rows], expected, rtol=1e-4, atol=1e-5)
    assert (texture[:, 128:] > 0).mean() > 0.5  # spreads, not a copy of the means

    none = tmp_path / "none"
    embed_survey(checkpoint, small_survey, none, EmbedOptions(texture_stage=0, field=False))
    assert load(none).texture() is None
    with pytest.raises(SslHpcError, match="texture_stage=5: expected 0 \\(none\\) or"):
        embed_survey(checkpoint, small_survey, tmp_path / "refused", EmbedOptions(texture_stage=5))
    assert not (tmp_path / "refused").exists()


def test_corrupt_shard_is_detected_and_redone(checkpoint, small_survey, tmp_path):
    out = tmp_path / "corrupt"
    embed_survey(checkpoint, small_survey, out, EmbedOptions(batch_size=64))
    victim = out / "emb-00003.h5"
    blob = bytearray(victim.read_bytes())
    blob[-100] ^= 0xFF  # inside the embeddings of the last rows
    victim.write_bytes(bytes(blob))
    with pytest.raises(EmbeddingError, match="emb-00003.h5: sha256 differs"):
        load(out, verify="full")
    manifest = embed_survey(checkpoint, small_survey, out, EmbedOptions(batch_size=64))
    assert manifest["ranks"][0]["embedded"] == 48  # that shard alone
    load(out, verify="full")


def test_cpu_ranks_split_the_node_unless_the_launcher_bound_them():
    from ssl_hpc.embed.placement import rank_threads

    cores, usable = os.cpu_count(), len(os.sched_getaffinity(0))
    if usable < cores:  # this test runs bound (taskset, a cpuset): its cores, whatever the ranks
        assert rank_threads(1) == usable and rank_threads(cores) == usable
    else:
        assert rank_threads(1) == cores
        assert rank_threads(cores) == 1 and rank_threads(4 * cores) == 1
    # a rank bound to one core (mpiexec --bind-to core, srun --cpu-bind) uses just that one
    code = (
        "import os; os.sched_setaffinity(0, {0}); from ssl_hpc.embed.placement import rank_threads;"
    )
    code += "print(rank_threads(1))"
    bound = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert bound.stdout.strip() == ("1" if cores > 1 else str(cores)), bound.stderr


def test_opening_a_set_rehashes_only_shards_changed_since_the_last_check(
    single, tmp_path, monkeypatch
):
    """Every reader opens a set verified: the first open re-hashes each shard and stamps it
    in verified.json; later opens re-hash only a shard whose size or mtime moved, so a
    damaged one is still caught; a stale or garbled stamp file means re-hashing all."""
    from ssl_hpc.embed import store

    emb = tmp_path / "emb"
    shutil.copytree(single[0], emb)  # sizes and mtimes kept: a stamp there would still hold
    (emb / store.VERIFIED_FILE).unlink(missing_ok=True)
    hashed = []
    real = store.sha256_file
    monkeypatch.setattr(store, "sha256_file", lambda p: hashed.append(p.name) or real(p))
    shards = [e["file"] for e in json.loads((emb / "manifest.json").read_text())["shards"]]
    load(emb)
    assert sorted(hashed) == sorted(shards) and (emb / store.VERIFIED_FILE).exists()
    hashed.clear()
    load(emb)
    assert hashed == []  # nothing moved since the check
    victim = emb / shards[-1]
    original = victim.read_bytes()
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0xFF  # a vector's byte: memory-mapped, no checksum of its own
    victim.write_bytes(bytes(damaged))
    with pytest.raises(EmbeddingError, match=f"{victim.name}: sha256 differs"):
        load(emb)
    assert hashed == [victim.name]
    victim.write_bytes(original)  # mended; and a garbled stamp file: everything re-hashed
    (emb / store.VERIFIED_FILE).write_text("[not a mapping")
    hashed.clear()
    load(emb)
    assert sorted(hashed) == sorted(shards)


def test_embed_options_and_device_are_refused_before_the_output_is_claimed(tmp_path):
    """A bad device or count fails before run.json is written: a failed run must not
    pin the directory to settings the corrected rerun is then refused for."""
    import torch

    from ssl_hpc.embed.placement import pick_device

    for values, message in (
        ({"batch_size": 0}, "batch_size 0: must be >= 1"),
        ({"pca_dims": -1}, "pca_dims -1: must be >= 0"),
        ({"pca_sample": 0}, "pca_sample 0: must be >= 1"),
    ):
        with pytest.raises(SslHpcError, match=message):
            EmbedOptions(**values)
    with pytest.raises(SslHpcError, match="device 'bogus': not a device"):
        pick_device("bogus", 0)
    missing = f"cuda:{torch.cuda.device_count()}"  # one past the last GPU, or any on a CPU box
    with pytest.raises(SslHpcError, match=f"device '{missing}': no such GPU"):
        pick_device(missing, 0)
    assert pick_device("cpu", 3) == torch.device("cpu")


def test_embed_says_when_pca_holds_fewer_components_than_asked_for():
    """--pca larger than the sample or the embedding width is clamped by the fit; the
    command says so instead of leaving the user to find it in the manifest."""
    from jobs.embed import _pca_line

    fitted = {"dims": 40, "sample": 40, "explained_variance": 1.0}
    said = _pca_line(fitted, 64, 128)
    assert said.startswith("pca.npz: 40 components from 40 objects, 100.0% of the variance")
    assert "--pca 64 asked for more than the 40 there can be" in said
    assert "asked" not in _pca_line(fitted, 40, 128)
