"""Figures the notebooks show and save (matplotlib)."""

from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

__all__ = ["image_grid", "rate_distortion", "reported_rate_distortion", "bars", "hbar_panels", "scatter_by_group",
           "training_curves", "moving_average"]


def image_grid(images: dict[str, Image.Image], scale: float = 2.5, wrap: int | None = None):
    """One row of images with their titles, pixels kept sharp; returns the Figure.

    ``wrap``: break each title into lines of at most this many characters (e.g. a caption under a scene).
    """
    if wrap:
        images = {"\n".join(textwrap.wrap(t, wrap)) or t: im for t, im in images.items()}
    title_lines = max(t.count("\n") + 1 for t in images)
    aspect = max(im.height / im.width for im in images.values())  # the tallest panel sets the row's height
    fig, axes = plt.subplots(1, len(images), squeeze=False,
                             figsize=(scale * len(images), scale * (aspect + 0.15) + 0.2 * (title_lines - 1)))
    for ax, (title, image) in zip(axes[0], images.items()):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    return fig


def rate_distortion(curves: dict[str, tuple[list[float], list[float]]], ylabel: str = "PSNR (dB)"):
    """Quality against real bpp, one line per named curve ``{name: (bpp, quality)}``; returns the Figure."""
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for name, (bpp, quality) in curves.items():
        ax.plot(bpp, quality, "o-", label=name)
    ax.set_xlabel("bits per pixel (whole .itc file)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def reported_rate_distortion(curves: dict[str, list[dict]], key: str = "lpips_vgg", ax=None,
                             ylabel: str = "LPIPS-VGG (lower is better)"):
    """Reported curves ``{method: [{"bpp", key}, ...]}`` as dashed lines labelled "reported (paper)".

    Draws on ``ax`` (e.g. ``rate_distortion(...).axes[0]``, to set measured curves beside them) or on a
    new figure; returns the Figure. Use with :func:`itc_core.metrics.reported_curves`.
    """
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        ax.set_xlabel("bits per pixel")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    for name, points in curves.items():
        points = sorted(points, key=lambda p: p["bpp"])
        ax.plot([p["bpp"] for p in points], [p[key] for p in points], "x--", lw=1, alpha=0.8,
                label=f"{name}: reported (paper)")
    ax.legend(fontsize=7)
    ax.figure.tight_layout()
    return ax.figure


def bars(values: dict[str, float], ylabel: str, title: str = ""):
    """A bar chart of named values, each labelled with its number; returns the Figure."""
    fig, ax = plt.subplots(figsize=(max(4.0, 0.8 * len(values)), 3.2))
    rects = ax.bar(list(values), list(values.values()), color="tab:blue")
    ax.bar_label(rects, fmt="%.1f", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="x", labelrotation=20)
    fig.tight_layout()
    return fig


def hbar_panels(panels: dict[str, dict], title: str = "", fmt: str = "%.1f"):
    """Horizontal bars, one panel per entry ``{x label: {row label: value}}``; a value may be a dict
    ``{series: value}`` for grouped bars (one colour per series, legend right of the panels). Every bar is
    labelled with its number, so equal values read as equal; returns the Figure."""
    first = next(iter(panels.values()))
    rows = list(first)
    series = list(next(iter(first.values()))) if isinstance(next(iter(first.values())), dict) else [None]
    height = 0.8 / len(series)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 1.6, 0.5 + 0.32 * len(rows) * len(series)
                                                     + 0.3), squeeze=False, sharey=True)
    for ax, (xlabel, values) in zip(axes[0], panels.items()):
        for k, name in enumerate(series):
            numbers = [values[r] if name is None else values[r][name] for r in rows]
            y = np.arange(len(rows)) + (k - (len(series) - 1) / 2) * height
            rects = ax.barh(y, numbers, height=height * 0.95, label=name)
            ax.bar_label(rects, fmt=fmt, fontsize=7, padding=2)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.margins(x=0.18)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(np.arange(len(rows)), rows, fontsize=8)
    axes[0][0].invert_yaxis()
    if series != [None]:  # outside the panels, right of the last one: it never hides a bar
        axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def scatter_by_group(points: dict[str, tuple[list[float], list[float]]], xlabel: str, ylabel: str):
    """One scatter series per named group ``{name: (x, y)}``; returns the Figure."""
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for name, (x, y) in points.items():
        ax.scatter(x, y, s=12, label=name, alpha=0.7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig


def moving_average(values, window: int) -> np.ndarray:
    """The trailing mean over the last ``window`` values (fewer at the start), same length as ``values``."""
    values = np.asarray(values, dtype=float)
    sums = np.cumsum(np.insert(values, 0, 0.0))
    counts = np.minimum(np.arange(1, len(values) + 1), window)
    return (sums[1:] - sums[np.arange(1, len(values) + 1) - counts]) / counts


def training_curves(metrics_csv, terms=("loss", "bpp", "mse", "l1", "lpips", "clip_iqa", "clip_i2t"),
                    smooth: int = 5):
    """One panel per loss term logged in ``itc finetune`` ``metrics.csv`` files (train rows); returns the Figure.

    ``metrics_csv``: one path, or ``{run name: path}`` to overlay runs (one colour each). Each logged step is
    drawn faintly and its trailing mean over ``smooth`` steps (the batch-to-batch noise of a short run hides
    the trend) as a solid line.
    """
    import csv

    runs = metrics_csv if isinstance(metrics_csv, dict) else {None: metrics_csv}
    logs = {name: [r for r in csv.DictReader(open(path, newline="")) if r["split"] == "train"]
            for name, path in runs.items()}
    present = [t for t in terms if any(rows and rows[0].get(t) for rows in logs.values())]
    fig, axes = plt.subplots(1, len(present), figsize=(2.6 * len(present), 2.5), squeeze=False)
    for ax, term in zip(axes[0], present):
        for k, (name, rows) in enumerate(logs.items()):
            if not (rows and rows[0].get(term)):
                continue
            steps, values = [int(r["step"]) for r in rows], [float(r[term]) for r in rows]
            colour = f"C{k}"
            ax.plot(steps, values, lw=0.6, alpha=0.3, color=colour)
            ax.plot(steps, moving_average(values, smooth), lw=1.4, color=colour, label=name)
        ax.set_title(term, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    if len(logs) > 1:
        axes[0][0].legend(fontsize=6)
    fig.suptitle(f"faint: every step; solid: mean of the last {smooth} steps", fontsize=8)
    fig.tight_layout()
    return fig
