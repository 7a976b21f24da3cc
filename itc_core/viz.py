"""Figures the notebooks show and save (matplotlib)."""

from __future__ import annotations

import matplotlib.pyplot as plt
from PIL import Image

__all__ = ["image_grid", "rate_distortion", "reported_rate_distortion", "bars", "scatter_by_group", "training_curves"]


def image_grid(images: dict[str, Image.Image], scale: float = 2.5):
    """One row of images with their titles, pixels kept sharp; returns the Figure."""
    title_lines = max(t.count("\n") + 1 for t in images)
    fig, axes = plt.subplots(1, len(images), figsize=(scale * len(images), scale * 1.15 + 0.18 * (title_lines - 1)),
                             squeeze=False)
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


def scatter_by_group(points: dict[str, tuple[list[float], list[float]]], xlabel: str, ylabel: str):
    """One scatter series per named group ``{name: (x, y)}``; returns the Figure."""
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for name, (x, y) in points.items():
        ax.scatter(x, y, s=12, label=name, alpha=0.7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def training_curves(metrics_csv, terms=("loss", "bpp", "mse", "l1", "lpips", "clip_iqa", "clip_i2t")):
    """One panel per loss term logged in an ``itc finetune`` ``metrics.csv`` (train rows); returns the Figure."""
    import csv

    rows = [r for r in csv.DictReader(open(metrics_csv, newline="")) if r["split"] == "train"]
    present = [t for t in terms if rows and rows[0].get(t)]
    fig, axes = plt.subplots(1, len(present), figsize=(2.6 * len(present), 2.4), squeeze=False)
    steps = [int(r["step"]) for r in rows]
    for ax, term in zip(axes[0], present):
        ax.plot(steps, [float(r[term]) for r in rows], lw=1)
        ax.set_title(term, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
