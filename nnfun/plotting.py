"""Figures with matplotlib (Agg backend): the only module of nnfun that imports it.

Experiments draw through these helpers; ``plt`` is re-exported for one-off figures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plt", "figure", "curves", "image_grid", "save", "history"]


def figure(ncols: int = 1, nrows: int = 1, size: tuple[float, float] = (4.5, 3.5)):
    """A figure and a flat list of axes, ``size`` per panel."""
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False
    )
    return fig, list(axes.ravel())


def curves(
    ax,
    series: Mapping[str, np.ndarray],
    *,
    x: Sequence[float] | None = None,
    title: str = "",
    xlabel: str = "epoch",
    ylabel: str = "",
    log: bool = False,
    marker: str | None = None,
) -> None:
    """One line per series; a 2-D series (seeds, points) is drawn as mean +- std band;
    ``marker`` ("o") marks the measured points."""
    for name, values in series.items():
        values = np.asarray(values, np.float64)
        mean = values.mean(0) if values.ndim == 2 else values
        xs = np.arange(1, len(mean) + 1) if x is None else np.asarray(x)
        (line,) = ax.plot(xs, mean, label=name, marker=marker, ms=4)
        if values.ndim == 2 and values.shape[0] > 1:
            std = values.std(0)
            ax.fill_between(xs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    if log:
        ax.set_yscale("log")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)


def history(hist: Mapping[str, Sequence[float]], path: str | Path, title: str = "") -> Path:
    """Loss and metric curves of a fit history (train and val_), one panel each."""
    names = [k for k in hist if not k.startswith("val_") and isinstance(hist[k], list)]
    fig, axes = figure(len(names))
    for ax, name in zip(axes, names, strict=True):
        series = {"train": hist[name]}
        if f"val_{name}" in hist:
            series["validation"] = hist[f"val_{name}"]
        curves(ax, series, title=f"{title} {name}".strip(), ylabel=name)
    return save(fig, path)


def image_grid(
    images: np.ndarray, titles: Sequence[str], path: str | Path, cols: int = 8, suptitle: str = ""
):
    """Images (n, h, w) or (n, h, w, 3) in a grid with a title each (and ``suptitle`` above)."""
    rows = max(1, int(np.ceil(len(images) / cols)))
    fig, axes = figure(cols, rows, size=(1.6, 2.0))
    if suptitle:
        fig.suptitle(suptitle)
    for ax in axes:
        ax.axis("off")
    for ax, image, title in zip(axes, images, titles, strict=False):
        ax.imshow(image, cmap=None if image.ndim == 3 else "gray")
        ax.set_title(title, fontsize=7)
    # Fixed margins: tight_layout measures every panel, half the cost of a large grid.
    top = 1 - (0.5 if suptitle else 0.25) / fig.get_figheight()
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=top, wspace=0.1, hspace=0.35)
    return save(fig, path, tight=False)


def save(fig, path: str | Path, tight: bool = True) -> Path:
    """Writes the figure as PNG (folders created; ``tight``: tight_layout first) and closes it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def figure_with_3d(ncols: int, three_d: Sequence[int] = (0,), size=(4.5, 3.5)):
    """A one-row figure of ``ncols`` panels; those listed in ``three_d`` are 3-D axes."""
    fig = plt.figure(figsize=(size[0] * ncols, size[1]))
    axes = [
        fig.add_subplot(1, ncols, i + 1, projection="3d" if i in three_d else None)
        for i in range(ncols)
    ]
    return fig, axes


def surface(ax, x, y, z, *, title="", xlabel="", ylabel="", zlabel="") -> None:
    """The surface z(x, y) on 3-D axes; x, y, z are ``(n, m)`` grids (``np.meshgrid``)."""
    ax.plot_surface(x, y, z, cmap="viridis", linewidth=0, antialiased=True, alpha=0.9)
    ax.contour(x, y, z, levels=15, cmap="viridis", offset=float(np.min(z)), linewidths=0.8)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel, zlabel=zlabel)


def contour_map(
    ax,
    x,
    y,
    z,
    *,
    levels=20,
    centre: Sequence[float] | None = None,
    arrows: tuple[np.ndarray, np.ndarray] | None = None,
    paths: Mapping[str, np.ndarray] | None = None,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
) -> None:
    """Contour lines of z(x, y) with optional extras.

    ``centre``: a point marked with a star; ``arrows``: (points (n, 2), vectors (n, 2)), drawn
    with equal length so that their direction shows; ``paths``: {label: (steps, 2)} polylines
    (e.g. gradient-descent iterates). The axes keep the grid's extent and equal scales.
    """
    lines = ax.contour(x, y, z, levels=levels, cmap="viridis", linewidths=0.9)
    ax.figure.colorbar(lines, ax=ax, fraction=0.046)
    if arrows is not None:
        at, vec = (np.asarray(a, np.float64) for a in arrows)
        unit = vec / np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-300)
        ax.quiver(at[:, 0], at[:, 1], unit[:, 0], unit[:, 1], color="crimson", width=0.004,
                  scale=25, label="gradient direction")  # fmt: skip
    for label, path in (paths or {}).items():
        path = np.asarray(path, np.float64)
        ax.plot(path[:, 0], path[:, 1], ".-", ms=3, lw=1, label=label)
    if centre is not None:
        ax.plot(*centre, "k*", ms=12, label="minimum")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel, aspect="equal")
    ax.set_xlim(float(np.min(x)), float(np.max(x)))
    ax.set_ylim(float(np.min(y)), float(np.max(y)))
    ax.legend(fontsize=7, loc="upper left")


__all__ += ["figure_with_3d", "surface", "contour_map"]
