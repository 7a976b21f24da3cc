"""What notebook 04 shows of an ``itc eval`` run: RD curves, the BD table, and decoded outputs on demand.

    run = load_run("outputs/eval-tiny")              # summary.json + results.jsonl + the settings behind them
    rd_figure(run.summary, "referee_distance")       # bpp (log) against a metric, one line per method
    bd_table(run.summary)                            # BD-rate with 95 % intervals against the anchor (pandas)
    outputs = MethodOutputs(run.settings)            # decoded images, recomputed per (image, method), cached
    outputs.rows("scene-2000000", "ours")            # the scored rows of every rate point + "decoded", "reading"

A results folder holds numbers only; the images a gallery or widget shows are decoded again by the
same code path as ``itc eval`` (:class:`evalrun.MethodRunner`), so :func:`reproduces` can check them
against the stored rows.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import ItcError

__all__ = ["METRIC_LABELS", "EvalRun", "load_run", "settings_of", "rd_curves", "rd_figure", "bd_table", "bd_sentence",
           "not_run", "acceptance", "MethodOutputs", "gallery_panels", "reproduces"]

METRIC_LABELS = {
    "referee_distance": "referee distance (lower is better)",
    "referee_exact": "referee exact-scene accuracy",
    "clip_image": "CLIP image-image similarity",
    "psnr": "PSNR (dB)",
    "lpips": "LPIPS (lower is better)",
}


@dataclass
class EvalRun:
    """A finished ``itc eval`` folder: its summary, its per-image rows and the settings that made them."""

    folder: Path
    summary: dict
    rows: list[dict]
    settings: object  # evalrun.EvalSettings


def load_run(folder: str | Path) -> EvalRun:
    """Read ``summary.json``, ``results.jsonl`` and ``run.json`` of an ``itc eval`` folder.

    Raises:
        ItcError: the folder lacks one of them (an unfinished run: rerun ``itc eval`` to finish it).
    """
    from .evalrun import read_rows

    folder = Path(folder)
    for name in ("summary.json", "results.jsonl", "run.json"):
        if not (folder / name).is_file():
            raise ItcError(f"{folder}: no {name}; not a finished `itc eval` folder")
    summary = json.loads((folder / "summary.json").read_text())
    return EvalRun(folder, summary, read_rows(folder / "results.jsonl"), settings_of(folder))


def settings_of(folder: str | Path):
    """The :class:`~itc_core.evalrun.EvalSettings` whose run wrote ``folder`` (run.json and the summary's points)."""
    from .evalrun import EvalSettings

    folder = Path(folder)
    run = json.loads((folder / "run.json").read_text())
    summary = json.loads((folder / "summary.json").read_text())
    points = {m: list(p) for m, p in summary["means"].items()}
    lic = sorted({int(p[1:]) for m in ("lic", "lic+restorer", "ours", "ours-full") for p in points.get(m, ())})
    pillow = sorted({int(p[1:]) for m in ("jpeg", "webp") for p in points.get(m, ())})
    misc = [tuple(int(v) for v in re.fullmatch(r"b(\d+)c(\d+)", p).groups()) for p in points.get("misc", ())]
    methods = tuple(summary["methods"]) + tuple(m for m in summary["missing_methods"] if m not in summary["methods"])
    return EvalSettings(preset=run["preset"], dataset=run["dataset"], methods=methods, limit=summary["images"],
                        qualities=tuple(lic) or None, pillow_qualities=tuple(pillow) or None,
                        **({"misc_points": tuple(misc)} if misc else {}), steps=run["steps"],
                        anchor=summary["anchor"])


def rd_curves(summary: dict, metric: str) -> dict[str, tuple[list[float], list[float]]]:
    """``{method: (bpp, metric)}`` from the summary's per-point means, rate points without the metric left out."""
    curves = {}
    for method, points in summary["means"].items():
        pts = [(p["bpp"], p[metric]) for p in points.values() if p.get(metric) is not None]
        if pts:
            curves[method] = ([b for b, _ in pts], [v for _, v in pts])
    return curves


def rd_figure(summary: dict, metric: str):
    """Mean ``metric`` against mean whole-file bpp (log axis), one line per method; returns the Figure."""
    from . import viz

    fig = viz.rate_distortion(rd_curves(summary, metric), METRIC_LABELS.get(metric, metric))
    ax = fig.axes[0]
    ax.set_xscale("log")
    ax.set_xlabel("bits per pixel (each method's whole file)")
    ax.set_title(f"{summary['dataset']}, {summary['images']} images, preset {summary['preset']}", fontsize=9)
    fig.tight_layout()
    return fig


def _percent(value, ci) -> str:
    if value is None:
        return "no overlap"
    interval = f" [{ci[0]:+.1f}, {ci[1]:+.1f}]" if ci else " [no interval]"
    return f"{value:+.1f} %{interval}"


def _quality(value, ci) -> str:
    if value is None:
        return "no overlap"
    interval = f" [{ci[0]:+.3g}, {ci[1]:+.3g}]" if ci else " [no interval]"
    return f"{value:+.3g}{interval}"


def bd_table(summary: dict, quality: bool = False):
    """The BD figures against the summary's anchor as a DataFrame: one row per method, one column per metric.

    Cells read "BD-rate % [95 % interval]" (negative: fewer bits for the same quality), or with ``quality``
    the BD-quality in the metric's unit; "no overlap" where the curves share no quality range.
    """
    import pandas as pd

    cells = {}
    for metric, table in summary["bd"].items():
        for method, bd in table.items():
            text = (_quality(bd["bd_quality"], bd["bd_quality_ci"]) if quality
                    else _percent(bd["bd_rate"], bd["bd_rate_ci"]))
            cells.setdefault(method, {})[metric] = text
    frame = pd.DataFrame.from_dict(cells, orient="index")
    frame.index.name = f"vs {summary['anchor']}"
    return frame


_NAMES = {"referee_distance": "referee distance", "referee_exact": "exact-scene accuracy", "psnr": "PSNR",
          "clip_image": "CLIP image similarity", "lpips": "LPIPS"}


def bd_sentence(summary: dict, method: str, metric: str) -> str:
    """One sentence reading ``method``'s BD-rate against the summary's anchor on ``metric``, with what its 95 %
    bootstrap interval says: the sign is settled when the whole interval lies on one side of 0, not when it spans 0."""
    bd = summary["bd"].get(metric, {}).get(method)
    anchor, images, name = summary["anchor"], summary["images"], _NAMES.get(metric, metric)
    if not bd or bd["bd_rate"] is None:
        return f"{method} and {anchor} share no range of {name} on these {images} images: no BD-rate."
    rate, ci = bd["bd_rate"], bd["bd_rate_ci"]
    fewer = f"{abs(rate):.0f} % {'fewer' if rate < 0 else 'more'} bits than {anchor} at equal {name}"
    if not ci:
        return f"{method} needs {fewer} on {images} images; too few resamples overlap for an interval."
    span = f"95 % interval {ci[0]:+.0f} to {ci[1]:+.0f} %"
    if ci[0] < 0 < ci[1]:
        return (f"{method} needs {fewer} on {images} images, but the {span} spans 0: resampling these images, "
                "either sign comes out, so this run cannot tell which needs fewer bits (more images narrow it).")
    return (f"{method} needs {fewer} on {images} images ({span}: the resampled images agree on the sign; "
            "the width is how far the figure itself may move).")


def not_run(summary: dict, wanted=None) -> dict[str, str]:
    """Methods with no numbers in the summary and why: missing from the preset, or not asked for."""
    out = dict(summary.get("missing_methods", {}))
    for method in wanted or ():
        if method not in summary["means"] and method not in out:
            out[method] = "not among this run's methods"
    return out


def acceptance(summary: dict, method: str = "ours-full", anchor: str = "lic", saving: float = 40.0,
               below_bpp: float = 0.2) -> dict:
    """Issue 10's targets, measured: ``method`` saves at least ``saving`` % rate against ``anchor`` on the
    referee distance (BD-rate), and reads more exact scenes than ``anchor`` at each of its rate points below
    ``below_bpp`` (the anchor's accuracy interpolated at that bpp, linear in log bpp; None where the anchor's
    curve does not reach). Values are None where the run cannot say (method missing, no overlap)."""
    import numpy as np

    out = {"method": method, "anchor": anchor, "images": summary["images"]}
    bd = summary["bd"].get("referee_distance", {}).get(method) if summary["anchor"] == anchor else None
    out["bd_rate_referee_distance"] = bd and bd["bd_rate"]
    out["bd_rate_ci"] = bd and bd["bd_rate_ci"]
    out[f"saves_{saving:g}_percent"] = None if not bd or bd["bd_rate"] is None else bd["bd_rate"] <= -saving
    ref = [(p["bpp"], p["referee_exact"]) for p in summary["means"].get(anchor, {}).values()
           if p.get("referee_exact") is not None]
    mine = [(p["bpp"], p["referee_exact"]) for p in summary["means"].get(method, {}).values()
            if p.get("referee_exact") is not None and p["bpp"] < below_bpp]
    compared = []
    for bpp, exact in mine:
        inside = ref and min(b for b, _ in ref) <= bpp <= max(b for b, _ in ref)
        theirs = float(np.interp(np.log(bpp), *zip(*[(np.log(b), e) for b, e in sorted(ref)]))) if inside else None
        compared.append({"bpp": bpp, "exact": exact, f"{anchor}_exact": theirs})
    out["exact_below_bpp"] = compared
    out["beats_exact_everywhere"] = (None if not compared or any(c[f"{anchor}_exact"] is None for c in compared)
                                     else all(c["exact"] > c[f"{anchor}_exact"] for c in compared))
    return out


class MethodOutputs:
    """Decoded images of a run's methods, computed on first request per (image, method) and cached.

    Each (image, method) is decoded at all its rate points in one batch, as ``itc eval`` does, and scored by
    the same scorer; rows are ordered by rate and carry ``decoded`` (the image) and ``reading`` (the
    referee's reading, None without a referee).
    """

    def __init__(self, settings):
        from .data import open_dataset

        settings.validate()
        self.settings = settings
        self.dataset = open_dataset(settings.dataset, settings.limit)
        self.names = list(self.dataset.names)
        self._runner = None
        self._current = None
        self._items: dict = {}
        self._rows: dict = {}

    @property
    def runner(self):
        """The evaluation's models (loaded on first use)."""
        if self._runner is None:
            from .evalrun import MethodRunner

            self._runner = MethodRunner(self.settings, self.item(self.names[0]))
        return self._runner

    @property
    def methods(self) -> list[str]:
        """The settings' methods that the preset can run."""
        return [m for m in self.settings.methods if m not in self.runner.missing]

    def item(self, name: str):
        """The dataset item called ``name``."""
        if name not in self._items:
            if name not in self.names:
                raise ItcError(f"no image {name!r} in {self.dataset!r}")
            self._items[name] = self.dataset[self.names.index(name)]
        return self._items[name]

    def levels(self) -> int:
        """How many rate points the method with the most has."""
        return max(len(self.runner.points(m)) for m in self.methods)

    def rows(self, name: str, method: str) -> list[dict]:
        """``method``'s rows for image ``name`` at every rate point, lowest rate first."""
        key = (name, method)
        if key not in self._rows:
            runner = self.runner
            if self._current != name:  # the runner caches one image's LIC files and caption
                runner.begin_image(self.item(name))
                self._current = name
            rows, decoded = runner.scored_outputs(method)
            referee = runner.scorer.referee
            readings = referee.read(decoded) if referee is not None else [None] * len(decoded)
            for row, image, reading in zip(rows, decoded, readings):
                row.update(decoded=image, reading=reading)
            self._rows[key] = sorted(rows, key=lambda r: (r["bpp"], r["point"]))
        return self._rows[key]

    def at_level(self, name: str, level: int) -> dict[str, dict]:
        """``{method: row}`` at rate level ``level`` (0: each method's lowest; past a method's top: its top)."""
        return {m: (rows := self.rows(name, m))[min(level, len(rows) - 1)] for m in self.methods}


def gallery_panels(outputs: MethodOutputs, name: str, level: int = 0) -> dict:
    """``{title: image}`` for :func:`viz.image_grid`: the original, then every method at rate level ``level``
    titled with its point, bpp and (with a referee) distance and exact-scene reading."""
    panels = {"original": outputs.item(name).image}
    for method, row in outputs.at_level(name, level).items():
        judged = ""
        if row.get("referee_distance") is not None:
            judged = f"\nd={row['referee_distance']:.3f}" + (", exact" if row.get("referee_exact") else "")
        panels[f"{method} {row['point']}\n{row['bpp']:.3f} bpp{judged}"] = row["decoded"]
    return panels


def reproduces(outputs: MethodOutputs, stored: list[dict], name: str, method: str, tol: float = 1e-3) -> bool:
    """Whether the recomputed rows of (``name``, ``method``) match the stored ``results.jsonl`` rows:
    bytes exactly, every stored number within ``tol`` (float noise of a different thread count)."""
    theirs = [r for r in stored if r["image"] == name and r["method"] == method]
    if not theirs:
        return False
    mine = {r["point"]: r for r in outputs.rows(name, method)}
    for row in theirs:
        new = mine.get(row["point"])
        if new is None or new["bytes"] != row["bytes"] or new.get("caption") != row.get("caption"):
            return False
        for k, v in row.items():
            if isinstance(v, float) and math.isfinite(v) and abs(new.get(k, math.inf) - v) > tol:
                return False
    return True
