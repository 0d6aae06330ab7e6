"""`encoder.pt`: what a pretraining run hands every later stage, read and written here only.

The file is a plain dict (``torch.load(weights_only=True)`` opens it):

=================  ==========================================================================
arch, stem         the ResNet (`build_encoder`)
in_channels        bands the encoder takes
bands              their names, in order, from the survey it was trained on (files from
                   before 2026-12-07 lack it: only the count is checked for them)
input_stretch      how pixels enter it (`InputScaling`; the per-band scale is in state_dict)
neck               what the pooled features leave through ("bn" or "none")
step               pretraining steps behind the weights
config             the whole pretraining config (``augment.out_size``: the view size;
                   ``embed_size``: the window later stages embed through, 0 = the view)
state_dict         the query encoder's weights and buffers
head_state_dict    its projection head (may be empty)
weights_sha256     sha256 of both state dicts' names, shapes and bytes: checked on load,
                   since flipped bytes inside a tensor load without complaint
=================  ==========================================================================
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import torch

from ..errors import SslHpcError
from ..utils.atomic import atomic_path
from ..utils.hashing import sha256_file
from .heads import projection_head
from .resnet import ResNet, build_encoder

ENCODER_FILE = "encoder.pt"


def save_encoder(
    path: str | os.PathLike,
    encoder: dict[str, torch.Tensor],
    head: dict[str, torch.Tensor],
    arch: str,
    stem: str,
    input_stretch: str,
    neck: str,
    step: int,
    config: dict,
    bands: tuple[str, ...],
) -> Path:
    """Write an encoder.pt (atomically) from the weights of an encoder and its head, trained
    on a survey of `bands`."""
    in_channels = int(encoder["stem.0.weight"].shape[1])
    if len(bands) != in_channels:
        raise SslHpcError(f"{path}: an encoder of {in_channels} bands named {list(bands)}")
    payload = {
        "arch": arch,
        "stem": stem,
        "in_channels": in_channels,
        "bands": list(bands),
        "input_stretch": input_stretch,
        "neck": neck,
        "step": int(step),
        "config": config,
        "state_dict": encoder,
        "head_state_dict": head,
        "weights_sha256": weights_digest(encoder, head),
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def weights_digest(*states: dict[str, torch.Tensor]) -> str:
    """sha256 over the names, dtypes, shapes and bytes of every tensor of `states`."""
    h = hashlib.sha256()
    for state in states:
        for name in sorted(state):
            t = state[name].detach().cpu().contiguous()
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class EncoderCheckpoint:
    """An encoder.pt, opened from the file or from the run directory that holds it."""

    def __init__(self, path: str | os.PathLike) -> None:
        p = Path(path)
        if p.is_dir():
            p = p / ENCODER_FILE
        if not p.is_file():
            raise SslHpcError(
                f"{path}: no encoder checkpoint (expected a pretraining run directory with "
                f"{ENCODER_FILE}, or the file)"
            )
        self.path = p.resolve()
        try:
            self.payload = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:  # a truncated or foreign file: say which
            raise SslHpcError(
                f"{self.path}: not a readable encoder checkpoint ({_why_unreadable(e)})"
            ) from e
        required = ("arch", "stem", "in_channels", "config", "state_dict")
        missing = [k for k in required if k not in self.payload]
        if missing:
            raise SslHpcError(f"{self.path}: not an encoder checkpoint (lacks {missing})")
        recorded = self.payload.get("weights_sha256")  # absent in files from before it was
        head = self.payload.get("head_state_dict") or {}
        if recorded and weights_digest(self.payload["state_dict"], head) != recorded:
            raise SslHpcError(
                f"{self.path}: the weights do not match their recorded sha256 (the file was "
                "damaged after it was written); use another copy or rerun pretraining"
            )

    # -- what it is -----------------------------------------------------------------------
    @property
    def arch(self) -> str:
        return str(self.payload["arch"])

    @property
    def stem(self) -> str:
        return str(self.payload["stem"])

    @property
    def in_channels(self) -> int:
        return int(self.payload["in_channels"])

    @property
    def bands(self) -> tuple[str, ...] | None:
        """The bands it was trained on, in order (None: a file that did not record them)."""
        bands = self.payload.get("bands")
        return tuple(bands) if bands is not None else None

    def check_bands(self, bands: tuple[str, ...], survey: str | os.PathLike) -> None:
        """Refuse `survey`, of `bands`, unless its bands are the ones the encoder takes, in
        its order: another survey's g band in the u band's channel embeds without error."""
        if len(bands) != self.in_channels:
            raise SslHpcError(
                f"{self.path}: the encoder takes {self.in_channels} bands, {survey} has "
                f"{len(bands)} ({','.join(bands)})"
            )
        if self.bands is not None and tuple(bands) != self.bands:
            raise SslHpcError(
                f"{self.path}: the encoder was trained on bands {','.join(self.bands)}, "
                f"{survey} has {','.join(bands)}: a survey in other bands (or order) needs "
                "an encoder pretrained on it"
            )

    def check_embedded(
        self, embedded_sha256: str | None, embeddings: str | os.PathLike, recorded: str | None
    ) -> None:
        """Refuse to stand for the embedding set at `embeddings` unless this is the file it
        was embedded with (`embedded_sha256`, the set's checkpoint_sha256; `recorded`: the
        path the set names): another encoder's vectors live in another space. A set that
        records no sha256 (a stand-in, an old set) has nothing to compare."""
        if not is_sha256(embedded_sha256) or self.sha256 == embedded_sha256:
            return
        raise SslHpcError(
            f"{self.path}: not the encoder {embeddings} was embedded with (sha256 "
            f"{self.sha256[:12]}..., the set's {embedded_sha256[:12]}..., from {recorded}): "
            "give that checkpoint (--checkpoint), or embed the survey with this one"
        )

    @property
    def input_stretch(self) -> str:
        return str(self.payload.get("input_stretch", "none"))

    @property
    def neck(self) -> str:
        return str(self.payload.get("neck", "none"))

    @property
    def step(self) -> int:
        return int(self.payload.get("step", 0))

    @property
    def config(self) -> dict:
        """The pretraining config it came from, as plain data."""
        return dict(self.payload["config"])

    @property
    def augment(self) -> dict:
        """The pretraining augmentations, as plain data (`AugmentConfig` keys)."""
        return dict(self.config.get("augment", {}))

    @property
    def crop(self) -> int:
        """The centred window every stage embeds a cutout through: the run's embed_size,
        else the view size it was trained at."""
        return int(self.config.get("embed_size") or self.augment.get("out_size", 64))

    @property
    def has_head(self) -> bool:
        return bool(self.payload.get("head_state_dict"))

    @functools.cached_property
    def sha256(self) -> str:
        """The file's identity (embedding sets name the checkpoint by it)."""
        return sha256_file(self.path)

    # -- the networks ---------------------------------------------------------------------
    def encoder(self, device: str | torch.device = "cpu") -> ResNet:
        """The encoder, in eval mode on `device`."""
        enc = build_encoder(self.arch, self.in_channels, self.stem, self.input_stretch, self.neck)
        enc.load_state_dict(self.payload["state_dict"])
        return enc.to(device).eval()

    def head(self, device: str | torch.device = "cpu") -> torch.nn.Module:
        """The projection head, in eval mode on `device`."""
        weights = self.payload.get("head_state_dict") or {}
        if not weights:
            raise SslHpcError(f"{self.path}: holds no projection head")
        first, last = weights["0.weight"], weights["2.weight"]
        net = projection_head(first.shape[1], first.shape[0], last.shape[0])
        net.load_state_dict(weights)
        return net.to(device).eval()


def is_sha256(text) -> bool:
    """Whether `text` is a sha256 hex digest (not absent, not a stand-in's placeholder)."""
    return isinstance(text, str) and len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def _why_unreadable(error: Exception) -> str:
    """torch.load's error in one line: its weights_only refusal is a page of advice to load
    with weights_only=False, which a file from a shared disk must not be."""
    text = str(error)
    if "Weights only load failed" in text:
        detail = text.partition("WeightsUnpickler error:")[2].split()
        return "not a torch file of tensors" + (f": {' '.join(detail[:6])}" if detail else "")
    return " ".join(text.split())[:200]
