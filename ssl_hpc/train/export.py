"""What a finished run leaves for the stages after it: the encoder and its learning curve."""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import to_dict
from ..utils.atomic import atomic_path
from .config import PretrainConfig
from .metrics_log import read_metrics

ENCODER_FILE = "encoder.pt"


def encoder_state(trainer_state: dict, part: str = "encoder_q") -> dict[str, torch.Tensor]:
    """Weights of `part` (encoder_q, head_q) from a trainer state, compile prefixes removed."""
    out = {}
    for key, value in trainer_state["model"].items():
        if key.startswith(part + "."):
            out[key.removeprefix(part + ".").replace("_orig_mod.", "")] = value
    return out


def export_run(out: Path, checkpoint, config: PretrainConfig) -> Path:
    """Write `out`/encoder.pt (weights + what rebuilds the net) and learning_curve.png."""
    from .ray_run import TRAINER_FILE

    with checkpoint.as_directory() as d:
        state = torch.load(Path(d) / TRAINER_FILE, map_location="cpu", weights_only=True)
    path = write_encoder(out / ENCODER_FILE, state, config)
    metrics = out / "metrics.csv"
    if metrics.exists():
        plot_learning_curve(metrics, out / "learning_curve.png")
    return path


def write_encoder(path: Path, state: dict, config: PretrainConfig) -> Path:
    """encoder.pt from a trainer state: the query encoder and head, and what rebuilds them."""
    weights = encoder_state(state)
    payload = {
        "arch": config.arch,
        "stem": config.stem,
        "in_channels": int(weights["stem.0.weight"].shape[1]),
        "step": int(state["step"]),
        "config": to_dict(config),
        "state_dict": weights,
        "head_state_dict": encoder_state(state, "head_q"),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def write_untrained_encoder(path: Path, config: PretrainConfig, in_channels: int) -> Path:
    """encoder.pt of the model `config` builds, untrained: the random-initialisation
    baseline downstream results are compared with (and a quick checkpoint for tests)."""
    from .pretrainer import build_model

    model = build_model(config, in_channels)
    return write_encoder(Path(path), {"model": model.state_dict(), "step": 0}, config)


def load_encoder(path: str | Path, device: str | torch.device = "cpu"):
    """The encoder saved by `export_run`, in eval mode."""
    from ..models import build_encoder

    payload = torch.load(path, map_location=device, weights_only=True)
    enc = build_encoder(payload["arch"], payload["in_channels"], payload["stem"])
    enc.load_state_dict(payload["state_dict"])
    return enc.to(device).eval()


def load_head(path: str | Path, device: str | torch.device = "cpu"):
    """The projection head saved beside the encoder by `export_run`, in eval mode."""
    from ..models import projection_head

    payload = torch.load(path, map_location=device, weights_only=True)
    head = payload.get("head_state_dict") or {}
    if not head:
        raise FileNotFoundError(f"{path}: holds no projection head")
    first, last = head["0.weight"], head["2.weight"]
    net = projection_head(first.shape[1], first.shape[0], last.shape[0])
    net.load_state_dict(head)
    return net.to(device).eval()


def plot_learning_curve(metrics_csv: Path, out_png: Path) -> None:
    """Loss and lr against step, and the kNN metrics where they were measured."""
    from ..viz.figures import pyplot, save_figure

    plt = pyplot()
    rows = [r for r in read_metrics(metrics_csv) if r.get("note") is None]
    knn = [
        (label, pts)
        for key, label in (
            ("knn_morph_acc", "kNN morphology accuracy"),
            ("knn_sigma_mad", "kNN photo-z sigma_MAD"),
        )
        if (pts := [(r["step"], r[key]) for r in rows if r.get(key) is not None])
    ]  # a survey without the labels an evaluation needs gets no empty panel
    fig, axes = plt.subplots(1, 1 + len(knn), figsize=(4 * (1 + len(knn)), 3.4), squeeze=False)
    axes = axes[0]
    loss = [(r["step"], r["loss"]) for r in rows if r.get("loss") is not None]
    if loss:
        axes[0].plot(*zip(*loss), color="C0")
        axes[0].set(xlabel="step", ylabel="InfoNCE loss", title="loss")
        lr = [(r["step"], r["lr"]) for r in rows if r.get("lr") is not None]
        ax2 = axes[0].twinx()
        ax2.plot(*zip(*lr), color="C1", lw=0.8)
        ax2.set_ylabel("learning rate", color="C1")
    for ax, (label, pts) in zip(axes[1:], knn):
        ax.plot(*zip(*pts), "o-", color="C2")
        ax.set(xlabel="step", title=label)
    save_figure(fig, out_png, dpi=100)
