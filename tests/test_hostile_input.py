"""Hostile and malformed input, one table: each case breaks one input of a real command
and must end with exit code 2 and one line on stderr naming the file, object or option,
no traceback, and nothing half-written (no temporary files left, no output a rerun would
take as complete)."""

from __future__ import annotations

import gzip
import json
import struct

import h5py
import numpy as np
import pytest
from astropy.io import fits
from PIL import Image
from test_ingest import CROP, cli_args, fake_cube
from test_ingest import fits_set as fits_set  # the fixture

from jobs.cli import main
from ssl_hpc.data import format as fmt


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("SSL_HPC_PROGRESS", "0")


# -- how each input is broken: (tmp_path, images dir, catalogue) -> (argv, words) ------------


def ingest_with(tmp_path, *extra):
    return cli_args(tmp_path, "out", *extra)


def fits_header_garbage(tmp, images, cat):
    data = (images / "3.fits").read_bytes()
    (images / "3.fits").write_bytes(data[:80] + b"NAXIS1  = 'not a number' / broken" + data[114:])
    return ingest_with(tmp), ["object 3 (", "3.fits", "unreadable FITS"]


def fits_truncated(tmp, images, cat):
    data = (images / "4.fits").read_bytes()
    (images / "4.fits").write_bytes(data[: len(data) // 2])
    return ingest_with(tmp), ["object 4 (", "4.fits"]


def fits_not_fits(tmp, images, cat):
    (images / "5.fits").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(3000))
    return ingest_with(tmp), ["object 5 (", "5.fits", "unreadable FITS"]


def fits_empty(tmp, images, cat):
    (images / "5.fits").write_bytes(b"")
    return ingest_with(tmp), ["object 5 (", "5.fits"]


def fits_compression_bomb(tmp, images, cat):
    # 3 x 20000 x 20000 of zeros: a few kB compressed, 4.8 GB as float32 once expanded
    hdu = fits.CompImageHDU(np.zeros((3, 20000, 20000), np.float32), compression_type="RICE_1")
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(images / "6.fits", overwrite=True)
    return ingest_with(tmp), ["object 6 (", "6.fits", "pixels", "limit"]


def fits_nan_and_inf(tmp, images, cat):
    cube = fake_cube(2)
    cube[:, CROP // 2 + 2, CROP // 2 + 2] = [np.nan, np.inf, -np.inf]
    fits.writeto(images / "2.fits", cube, overwrite=True)
    return ingest_with(tmp), ["object 2 (", "2.fits", "NaN", "inf"]


def fits_table_only(tmp, images, cat):
    table = fits.BinTableHDU.from_columns([fits.Column("x", "E", array=np.ones(3))])
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(images / "7.fits", overwrite=True)
    return ingest_with(tmp), ["object 7 (", "7.fits", "no image HDU"]


def fits_four_d(tmp, images, cat):
    fits.writeto(images / "8.fits", np.ones((2, 3, 24, 24), np.float32), overwrite=True)
    return ingest_with(tmp), ["object 8 (", "8.fits", "shape (2, 3, 24, 24)"]


def fits_gzip_damaged(tmp, images, cat):
    # gzip is recognised by its magic bytes, whatever the name; a flipped run of the
    # deflate stream fails inside zlib, not astropy
    packed = bytearray(gzip.compress((images / "3.fits").read_bytes()))
    packed[50:110] = bytes(b ^ 0xFF for b in packed[50:110])
    (images / "3.fits").write_bytes(bytes(packed))
    return ingest_with(tmp), ["object 3 (", "3.fits", "unreadable FITS"]


def fits_tile_compressed_damaged(tmp, images, cat):
    # RICE tiles cut short fail inside astropy's C decompressor, with its own exception
    hdu = fits.CompImageHDU(fake_cube(3), compression_type="RICE_1")
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(images / "3.fits", overwrite=True)
    with fits.open(images / "3.fits") as hdul:
        start = hdul[1].fileinfo()["datLoc"]
    _flip_bytes(images / "3.fits", start, start + 64, n=64)
    return ingest_with(tmp), ["object 3 (", "3.fits", "unreadable FITS"]


def catalogue_unknown_suffix(tmp, images, cat):
    renamed = cat.rename(cat.with_suffix(".xlsx"))
    argv = ingest_with(tmp)
    argv[argv.index("--catalog") + 1] = str(renamed)
    return argv, ["cat.xlsx", "cannot read catalogue", ".csv"]


def option_pattern_format_spec(tmp, images, cat):
    return ingest_with(tmp, "--pattern", "{id:s}.fits"), ["pattern '{id:s}.fits'"]


def option_out_pixel_scale_coarser_than_crop(tmp, images, cat):
    return ingest_with(tmp, "--out-pixel-scale", "10"), ["out_pixel_scale 10", "16 px crop"]


def catalogue_bom(tmp, images, cat):
    cat.write_bytes(b"\xef\xbb\xbf" + cat.read_bytes())  # as Excel saves "CSV UTF-8"
    return ingest_with(tmp, "--id-column", "ID"), ["no id column 'ID'; have ['id', 'ra'"]


def catalogue_utf16(tmp, images, cat):
    cat.write_bytes(cat.read_text().encode("utf-16"))
    return ingest_with(tmp), [str(cat), "UTF-16"]


def _set_id(cat, row: int, text: str) -> None:
    """Replace the (one-digit) id of data row `row` of the catalogue with `text`."""
    lines = cat.read_text().splitlines()
    lines[row] = text + lines[row][1:]
    cat.write_text("\n".join(lines) + "\n")


def catalogue_ra_dec_swapped(tmp, images, cat):
    lines = cat.read_text().splitlines()  # id,ra,dec,...: dec takes ra's 150.0x
    rows = [line.split(",") for line in lines]
    lines = [",".join([r[0], r[2], r[1], *r[3:]]) for r in rows[1:]]
    cat.write_text("\n".join([",".join(rows[0]), *lines]) + "\n")
    return ingest_with(tmp), ["cat.csv", "'dec'", "data row 1", "swapped"]


def catalogue_quoted_comma_id(tmp, images, cat):
    _set_id(cat, 2, '"2,5"')
    return ingest_with(tmp), ["id column 'id'", "row 2", "'2,5' is not an integer"]


def catalogue_blank_id(tmp, images, cat):
    _set_id(cat, 4, "")
    return ingest_with(tmp), ["id column 'id'", "row 4: id is missing"]


def catalogue_twenty_digit_id(tmp, images, cat):
    _set_id(cat, 3, "12345678901234567890")
    return ingest_with(tmp), ["id column 'id'", "row 3", "12345678901234567890"]


def catalogue_header_only(tmp, images, cat):
    cat.write_text(cat.read_text().splitlines()[0] + "\n")
    return ingest_with(tmp), [str(cat), "no rows"]


def catalogue_binary_garbage(tmp, images, cat):
    cat.write_bytes(bytes(range(256)) * 20)
    return ingest_with(tmp), [str(cat), "cannot read catalogue"]


def _jpeg_set(tmp, images, cat, size=(24, 24)):
    jpegs = tmp / "jpegs"
    jpegs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(1, 9):
        pixels = rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(jpegs / f"{i}.jpg", quality=95)
    argv = ingest_with(tmp, "--images", str(jpegs), "--format", "jpeg")
    argv[argv.index("--bands") + 1] = "g,r,i"
    return jpegs, argv


def jpeg_not_a_jpeg(tmp, images, cat):
    jpegs, argv = _jpeg_set(tmp, images, cat)
    (jpegs / "3.jpg").write_text("<html>404 not found</html>")
    return argv, ["object 3 (", "3.jpg", "unreadable image"]


def jpeg_one_pixel(tmp, images, cat):
    jpegs, argv = _jpeg_set(tmp, images, cat)
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(jpegs / "4.jpg")
    return argv, ["object 4 (", "4.jpg", "1x1"]


def jpeg_two_bands(tmp, images, cat):
    # no JPEG has two channels: refused once, not object by object under --on-error skip
    _, argv = _jpeg_set(tmp, images, cat)
    argv[argv.index("--bands") + 1] = "i,r"
    return [*argv, "--on-error", "skip"], ["bands i,r: jpeg cutouts have three channels"]


def jpeg_claims_to_be_huge(tmp, images, cat):
    # a 24 x 24 JPEG whose frame header says 20000 x 20000: decoding it would take 1.2 GB
    jpegs, argv = _jpeg_set(tmp, images, cat)
    data = bytearray((jpegs / "5.jpg").read_bytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 20000, 20000)
    (jpegs / "5.jpg").write_bytes(bytes(data))
    return argv, ["object 5 (", "5.jpg", "400000000 pixels"]


def yaml_alias_bomb(tmp, images, cat):
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for n in "bcdefghi":
        prev = chr(ord(n) - 1)
        lines.append(f"{n}: &{n} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]")
    (tmp / "bomb.yaml").write_text("\n".join(lines) + "\n")
    return ingest_with(tmp, "--config", str(tmp / "bomb.yaml")), ["bomb.yaml", "unknown key"]


def yaml_huge_string(tmp, images, cat):
    (tmp / "huge.yaml").write_text("survey: " + "x" * 5_000_000 + "\n")
    return ingest_with(tmp, "--config", str(tmp / "huge.yaml")), ["huge.yaml", "larger than"]


def yaml_not_a_mapping(tmp, images, cat):
    (tmp / "list.yaml").write_text("- crop\n- 16\n")
    return ingest_with(tmp, "--config", str(tmp / "list.yaml")), ["list.yaml", "mapping"]


def yaml_syntax(tmp, images, cat):
    (tmp / "bad.yaml").write_text("crop: [16\nbands: g\n")
    return ingest_with(tmp, "--config", str(tmp / "bad.yaml")), ["bad.yaml", "not valid YAML"]


def option_negative_crop(tmp, images, cat):
    argv = ingest_with(tmp)
    argv[argv.index("--crop") + 1] = "-16"
    return argv, ["crop -16"]


def option_wrong_type(tmp, images, cat):
    return ingest_with(tmp, "rows_per_shard=many"), ["rows_per_shard", "many"]


def option_unknown_key(tmp, images, cat):
    return ingest_with(tmp, "row_per_shard=3"), ["row_per_shard"]


def synth_zero_objects(tmp, images, cat):
    return ["synth", "--out", str(tmp / "out"), "n_objects=0"], ["n_objects"]


def synth_nan_value(tmp, images, cat):
    return ["synth", "--out", str(tmp / "out"), "faint_range=nan"], ["faint_range"]


def pretrain_zero_temperature(tmp, images, cat):
    argv = ["pretrain", "--data", str(tmp / "nowhere"), "--out", str(tmp / "out")]
    return [*argv, "temperature=0"], ["temperature"]


def pretrain_psf_smoothing_without_psfs(tmp, images, cat):
    # FITS ingested without --psf-fwhm: refused before Ray, not in a worker restarted 4 times
    assert main(cli_args(tmp, "survey")) == 0
    argv = ["pretrain", "--data", str(tmp / "survey"), "--out", str(tmp / "out")]
    small = ["batch_size=2", "queue_size=4", "augment.out_size=8", "augment.max_shift=2"]
    return [*argv, "augment.codes=RR,PS", *small], ["augmentation PS", "psf_fwhm"]


def checkpoint_flipped_bytes(tmp, images, cat):
    from test_embed import make_checkpoint

    path = make_checkpoint(tmp / "encoder.pt", seed=0)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2  # inside a tensor: torch.load would read it without complaint
    data[middle : middle + 8] = bytes(b ^ 0x55 for b in data[middle : middle + 8])
    path.write_bytes(bytes(data))
    argv = ["embed", "--checkpoint", str(path), "--data", str(tmp), "--out", str(tmp / "out")]
    return argv, [str(path), "do not match their recorded sha256"]


def checkpoint_truncated(tmp, images, cat):
    from test_embed import make_checkpoint

    path = make_checkpoint(tmp / "encoder.pt", seed=0)
    path.write_bytes(path.read_bytes()[:5000])
    argv = ["embed", "--checkpoint", str(path), "--data", str(tmp), "--out", str(tmp / "out")]
    return argv, [str(path), "not a readable encoder checkpoint"]


def checkpoint_not_a_checkpoint(tmp, images, cat):
    path = tmp / "encoder.pt"
    path.write_text("x\n")
    argv = ["embed", "--checkpoint", str(path), "--data", str(tmp), "--out", str(tmp / "out")]
    return argv, [str(path), "not a readable encoder checkpoint (not a torch file"]


def out_is_a_survey(tmp, images, cat):
    # --out given the survey: pretrain (probe, report, finetune) replaced its config.yaml
    assert main(cli_args(tmp, "survey")) == 0
    argv = ["pretrain", "--data", str(tmp / "survey"), "--out", str(tmp / "survey")]
    return argv, [f"--out {tmp / 'survey'}: holds a survey", "manifest.json"]


def out_is_a_file(tmp, images, cat):
    (tmp / "notes.txt").write_text("mine")
    argv = ["pretrain", "--data", str(tmp / "nowhere"), "--out", str(tmp / "notes.txt")]
    return argv, [f"--out {tmp / 'notes.txt'}: is a file"]


def _flip_bytes(path, start: int, stop: int, n: int = 16, seed: int = 0) -> None:
    """XOR n bytes of `path` at random offsets in [start, stop) with 0xFF."""
    data = bytearray(path.read_bytes())
    for offset in np.random.default_rng(seed).integers(start, stop, n):
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _small_survey(tmp):
    survey = tmp / "survey"
    argv = ["synth", "--out", str(survey), "n_objects=64", "rows_per_shard=32", "image_size=32"]
    assert main([*argv, "seed=1", "workers=1"]) == 0
    return survey


def manifest_not_utf8(tmp, images, cat):
    survey = tmp / "survey"
    survey.mkdir()
    (survey / fmt.MANIFEST_NAME).write_bytes(b'{"survey": "\xff\xfe"}')
    return ["info", str(survey)], ["manifest.json", "not valid JSON"]


def manifest_image_shape_lost_an_axis(tmp, images, cat):
    survey = _small_survey(tmp)
    manifest = json.loads((survey / fmt.MANIFEST_NAME).read_text())
    manifest["image_shape"] = manifest["image_shape"][:2]
    (survey / fmt.MANIFEST_NAME).write_text(json.dumps(manifest))
    return ["info", str(survey)], ["manifest.json", "malformed", "image_shape"]


def shard_flipped_bytes(tmp, images, cat):
    """Bytes flipped at random offsets in a shard's pixels: embedding stops on the image
    chunks' checksums (1-D columns have none: `ssl-hpc info` re-hashes whole shards)."""
    from test_embed import make_checkpoint

    survey = _small_survey(tmp)
    shard = survey / "shard-00001.h5"
    with h5py.File(shard) as f:
        chunks = f[fmt.IMAGE].id
        first, last = chunks.get_chunk_info(0), chunks.get_chunk_info(chunks.get_num_chunks() - 1)
        start, stop = first.byte_offset, last.byte_offset + last.size
    _flip_bytes(shard, start, stop)
    path = make_checkpoint(tmp / "encoder.pt", seed=0)
    argv = ["embed", "--checkpoint", str(path), "--data", str(survey), "--out", str(tmp / "out")]
    return argv, ["shard-00001.h5", "read"]


def pixels_damaged_under_a_matching_sha256(tmp, images, cat):
    """A shard damaged before its manifest entry was written (its sha256 matches): the
    pixel scan names the shard and rows, not h5py's bare OSError."""
    from dataclasses import replace

    from ssl_hpc.data.manifest import ShardEntry, load_manifest

    survey = _small_survey(tmp)
    shard = survey / "shard-00001.h5"
    with h5py.File(shard) as f:
        info = f[fmt.IMAGE].id.get_chunk_info(0)
    _flip_bytes(shard, info.byte_offset, info.byte_offset + info.size)
    manifest = load_manifest(survey)
    entries = [
        ShardEntry.of_file(survey / e.file, e.n_rows) if e.file == shard.name else e
        for e in manifest.shards
    ]
    replace(manifest, shards=tuple(entries)).write(survey)
    return ["info", str(survey), "--pixels"], [f"shard-00001.h5: cannot read '{fmt.IMAGE}' rows 0-"]


def embedding_flipped_bytes(tmp, images, cat):
    """Bytes flipped at random offsets anywhere in an embedding shard: its vectors are
    memory-mapped without a checksum, so opening the set re-hashes it."""
    from test_embed import make_checkpoint

    survey = _small_survey(tmp)
    path = make_checkpoint(tmp / "encoder.pt", seed=0)
    emb = tmp / "embeddings"
    assert main(["embed", "--checkpoint", str(path), "--data", str(survey), "--out", str(emb)]) == 0
    shard = emb / "emb-00000.h5"
    _flip_bytes(shard, 0, shard.stat().st_size)
    return ["search", "--embeddings", str(emb), "--query", "0"], [str(shard), "sha256"]


CASES = {
    f.__name__: f
    for f in (
        fits_header_garbage,
        fits_truncated,
        fits_not_fits,
        fits_empty,
        fits_compression_bomb,
        fits_nan_and_inf,
        fits_table_only,
        fits_four_d,
        fits_gzip_damaged,
        fits_tile_compressed_damaged,
        catalogue_bom,
        catalogue_utf16,
        catalogue_ra_dec_swapped,
        catalogue_quoted_comma_id,
        catalogue_blank_id,
        catalogue_twenty_digit_id,
        catalogue_header_only,
        catalogue_binary_garbage,
        catalogue_unknown_suffix,
        jpeg_not_a_jpeg,
        jpeg_one_pixel,
        jpeg_two_bands,
        jpeg_claims_to_be_huge,
        yaml_alias_bomb,
        yaml_huge_string,
        yaml_not_a_mapping,
        yaml_syntax,
        option_negative_crop,
        option_wrong_type,
        option_unknown_key,
        option_pattern_format_spec,
        option_out_pixel_scale_coarser_than_crop,
        synth_zero_objects,
        synth_nan_value,
        pretrain_zero_temperature,
        pretrain_psf_smoothing_without_psfs,
        checkpoint_flipped_bytes,
        checkpoint_truncated,
        checkpoint_not_a_checkpoint,
        out_is_a_survey,
        out_is_a_file,
        manifest_not_utf8,
        manifest_image_shape_lost_an_axis,
        shard_flipped_bytes,
        pixels_damaged_under_a_matching_sha256,
        embedding_flipped_bytes,
    )
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_input_gets_one_clear_line_and_exit_2(case, fits_set, capsys):
    tmp_path, images, cat = fits_set
    argv, words = CASES[case](tmp_path, images, cat)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, lines
    last = lines[0]
    assert last.startswith(f"ssl-hpc {argv[0]}: error: ")
    for word in words:
        assert word in last, f"{word!r} not in {last!r}"
    out = tmp_path / "out"
    if out.exists():
        assert not [p for p in out.rglob("*") if ".tmp" in p.name]
        assert not (out / "manifest.json").exists()  # never taken as a finished survey


def test_a_catalogue_with_a_byte_order_mark_ingests(fits_set):
    tmp_path, _, cat = fits_set
    cat.write_bytes(b"\xef\xbb\xbf" + cat.read_bytes())
    assert main(cli_args(tmp_path, "out")) == 0
    assert (tmp_path / "out" / "manifest.json").exists()
