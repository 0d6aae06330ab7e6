"""What a finished run leaves for the stages after it: the encoder and its learning curve."""

from __future__ import annotations

from pathlib import Path

import torch

from ..augment import SurveyStats
from ..config import to_dict
from ..models.checkpoint import ENCODER_FILE, save_encoder
from ..viz.figures import pyplot, save_figure
from .checkpoint import load_trainer_state
from .config import PretrainConfig
from .metrics_log import read_metrics
from .pretrainer import build_model


def encoder_state(trainer_state: dict, part: str = "encoder_q") -> dict[str, torch.Tensor]:
    """Weights of `part` (encoder_q, head_q) from a trainer state, compile prefixes removed."""
    out = {}
    for key, value in trainer_state["model"].items():
        if key.startswith(part + "."):
            out[key.removeprefix(part + ".").replace("_orig_mod.", "")] = value
    return out


def export_run(out: Path, checkpoint, config: PretrainConfig, bands: tuple[str, ...]) -> Path:
    """Write `out`/encoder.pt (weights + what rebuilds the net, trained on a survey of
    `bands`) and learning_curve.png."""
    with checkpoint.as_directory() as d:
        state = load_trainer_state(Path(d))
    path = write_encoder(out / ENCODER_FILE, state, config, bands)
    metrics = out / "metrics.csv"
    if metrics.exists():
        plot_learning_curve(metrics, out / "learning_curve.png")
    return path


def write_encoder(path: Path, state: dict, config: PretrainConfig, bands: tuple[str, ...]) -> Path:
    """encoder.pt from a trainer state: the query encoder and head, what rebuilds them,
    and the `bands` they take."""
    return save_encoder(
        path,
        encoder_state(state),
        encoder_state(state, "head_q"),
        config.arch,
        config.stem,
        config.input_stretch,
        config.neck,
        int(state["step"]),
        to_dict(config),
        bands,
    )


def write_untrained_encoder(path: Path, config: PretrainConfig, stats: SurveyStats) -> Path:
    """encoder.pt of the model `config` builds for a survey with `stats` (its bands and
    input scale), untrained: the random-initialisation baseline downstream results are
    compared with (and a quick checkpoint for tests)."""
    model = build_model(config, stats)
    state = {"model": model.state_dict(), "step": 0}
    return write_encoder(Path(path), state, config, stats.bands)


#: the learning curve's kNN panels: title, then (column, line label) of each line
KNN_PANELS = (
    (
        "kNN morphology",
        (("knn_morph_acc", "accuracy"), ("knn_morph_bacc", "balanced accuracy")),
    ),
    ("kNN photo-z (lower is better)", (("knn_sigma_mad", "sigma_MAD"),)),
)


def plot_learning_curve(metrics_csv: Path, out_png: Path) -> dict[str, list]:
    """Loss and lr against step, and the kNN metrics where they were measured, each with
    its value at step 0 (the same network at random initialisation) drawn dashed; returns
    what it drew: {line: [(step, value), ...]} (loss, lr and every kNN line)."""
    plt = pyplot()
    rows = [r for r in read_metrics(metrics_csv) if r.get("note") is None]

    def points(key: str) -> list[tuple[int, float]]:
        return [(r["step"], r[key]) for r in rows if r.get(key) is not None]

    # a survey without the labels an evaluation needs gets no empty panel
    panels = [(t, [(k, n) for k, n in lines if points(k)]) for t, lines in KNN_PANELS]
    panels = [(t, lines) for t, lines in panels if lines]
    fig, axes = plt.subplots(
        1, 1 + len(panels), figsize=(4.2 * (1 + len(panels)), 3.4), squeeze=False
    )
    axes = axes[0]
    loss = points("loss")
    drawn = {"loss": loss, "lr": points("lr")}
    if loss:
        axes[0].plot(*zip(*loss), color="C0")
        axes[0].set(xlabel="step", ylabel="InfoNCE loss", title="loss")
        ax2 = axes[0].twinx()
        ax2.plot(*zip(*points("lr")), color="C1", lw=0.8)
        ax2.set_ylabel("learning rate", color="C1")
    for ax, (title, lines) in zip(axes[1:], panels):
        for i, (key, name) in enumerate(lines):
            pts = drawn[key] = points(key)
            ax.plot(*zip(*pts), "o-", color=f"C{2 + i}", label=name)
            if pts[0][0] == 0:  # the random-initialisation baseline of the same run
                ax.axhline(pts[0][1], color=f"C{2 + i}", ls="--", lw=0.8)
        ax.set(xlabel="step", title=title)
        ax.legend(fontsize=7, title="dashed: random init", title_fontsize=7)
    save_figure(fig, out_png, dpi=100)
    return drawn
