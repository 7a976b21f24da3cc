"""Per-image quality of decoded images, and Bjøntegaard deltas with bootstrap confidence intervals.

Quality of each decoded image against its original, with what the preset has::

    scorer = Scorer.for_codec(codec, referee=Referee.load())      # tiny world: the referee judges
    scorer.score(originals, decoded, captions, truths)             # [{"psnr": ..., "ssim": ..., ...}, ...]

Keys (only those that apply): ``psnr`` (dB), ``ssim``, ``ms_ssim`` (shorter side over 160 px),
``lpips`` (hub presets, the ``lpips`` package: VGG for ``paper``, AlexNet otherwise), ``clip_image``
(cosine of the preset CLIP's embeddings of decoded and original), ``clip_text`` (cosine of the
decoded image and the reference caption, when given), and with a referee and tiny-world
ground-truth captions ``referee_distance`` (its LPIPS-style distance, decoded vs original),
``referee_exact`` (0/1) and ``referee_<attribute>`` (that image's attribute accuracy, 0..1; their
mean over images weighs every image alike, where the pooled accuracy of ``Referee.accuracy`` weighs
every object alike).

Bjøntegaard deltas use the ``bjontegaard`` package (pchip) over the curves' overlapping range, on
the monotone part of each curve; metrics in :data:`LOWER_IS_BETTER` are negated for the fit, so a
negative BD-rate always means the test saves bits::

    bd_rate(anchor_points, test_points, key="referee_distance")    # points: [{"bpp": ..., key: ...}, ...]
    bd_with_ci(rows, "lic", "ours", "referee_distance")            # rows: per-image results.jsonl records

``bd_with_ci`` builds each method's curve from per-point means over the images both methods have,
and a percentile confidence interval from resampling those images with replacement (the same draw
for anchor and test).
"""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pytorch_msssim import ms_ssim as _ms_ssim
from pytorch_msssim import ssim as _ssim

from .tinyworld.scenes import ATTRIBUTES as REFEREE_ATTRIBUTES  # the referee reads back the caption grammar

__all__ = ["psnr", "ssim", "ms_ssim", "Scorer", "LOWER_IS_BETTER", "REFEREE_ATTRIBUTES", "lpips_net", "monotone",
           "bd_rate", "bd_quality", "bd_with_ci", "reported_curves", "REPORTED_CSV"]

LOWER_IS_BETTER = frozenset({"lpips", "lpips_vgg", "referee_distance"})
REPORTED_CSV = Path(__file__).resolve().parent.parent / "data" / "reference" / "paper_kodak_lpips_vgg.csv"
LPIPS_NETS = {"paper": "vgg"}  # the paper reports LPIPS-VGG; other hub presets use LPIPS-Alex (docs/design.md §3)


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB for images in [0, 1] (inf when identical)."""
    mse = torch.mean((x.double() - y.double()) ** 2).item()
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(1.0 / mse)).item()


def ssim(x: torch.Tensor, y: torch.Tensor) -> float:
    """Structural similarity (11×11 Gaussian window); sides must be at least 11 px."""
    return float(_ssim(x.float(), y.float(), data_range=1.0, size_average=True))


def ms_ssim(x: torch.Tensor, y: torch.Tensor) -> float:
    """Multi-scale SSIM; pytorch_msssim needs the shorter side over 160 px."""
    if min(x.shape[-2:]) <= 160:
        raise ValueError(f"MS-SSIM needs images over 160 px on the shorter side, got {tuple(x.shape[-2:])}; use ssim")
    return float(_ms_ssim(x.float(), y.float(), data_range=1.0, size_average=True))


# ---------------------------------------------------------------- per-image scores

def lpips_net(config) -> str | None:
    """The LPIPS backbone a preset is scored with: None in the tiny world (the referee's distance stands in)."""
    refs = (config.caption.clip, config.caption.lmm, config.image_codec.weights, config.restorer.model)
    if any(str(r).startswith("tiny/") for r in refs if r):
        return None
    return LPIPS_NETS.get(config.name, "alex")


class Scorer:
    """Per-image quality of decoded images against originals, with what the preset has.

    Args:
        clip: a :class:`~itc_core.captioner.ClipScorer` (``clip_image``, ``clip_text``), or None.
        lpips: a callable ``lpips(x_hat, x)`` on (1, 3, H, W) tensors in [0, 1] giving one distance, e.g.
            :class:`~itc_core.semantic_losses.LpipsPackage`; or None.
        referee: a tiny-world :class:`~itc_core.tinyworld.referee.Referee`, or None.
    """

    def __init__(self, clip=None, lpips=None, referee=None):
        self.clip, self.lpips, self.referee = clip, lpips, referee

    @classmethod
    def for_codec(cls, codec, referee=None, lpips: str | None = "auto") -> "Scorer":
        """The scorer of ``codec``'s preset: its CLIP, LPIPS for hub presets (``lpips``: "auto", a net or None)."""
        from .semantic_losses import LpipsPackage

        net = lpips_net(codec.config) if lpips == "auto" else lpips
        clip = codec.clip if codec.config.caption.clip else None
        return cls(clip, LpipsPackage(net) if net else None, referee)

    def score(self, originals: list[Image.Image], decoded: list[Image.Image], captions: list[str | None],
              truths: list[str | None] | None = None) -> list[dict]:
        """One dict of float scores per image (see the module docstring for the keys).

        ``captions[i]`` is the reference caption for ``clip_text`` (None: no such key); ``truths[i]`` the
        tiny-world ground-truth caption the referee's reading is judged against (None: no referee accuracy).
        """
        n = len(originals)
        if len(decoded) != n or len(captions) != n or (truths is not None and len(truths) != n):
            raise ValueError(f"score needs as many decoded images, captions and truths as originals ({n}), got "
                             f"{len(decoded)}, {len(captions)} and {'no' if truths is None else len(truths)}")
        originals = [im.convert("RGB") for im in originals]
        decoded = [im.convert("RGB") for im in decoded]
        rows = [_pixel_scores(a, b) for a, b in zip(originals, decoded)]
        if self.lpips is not None:
            self._add_lpips(rows, originals, decoded)
        if self.clip is not None:
            self._add_clip(rows, originals, decoded, captions)
        if self.referee is not None:
            self._add_referee(rows, originals, decoded, truths)
        return rows

    @torch.no_grad()
    def _add_lpips(self, rows, originals, decoded) -> None:
        from .data import image_to_tensor

        for row, a, b in zip(rows, originals, decoded):  # one at a time: image sizes may differ
            row["lpips"] = float(self.lpips(image_to_tensor(b), image_to_tensor(a)).reshape(-1)[0])

    def _add_clip(self, rows, originals, decoded, captions) -> None:
        emb_decoded = self._batched(self.clip.image_features, decoded)
        sims = (emb_decoded * self._batched(self.clip.image_features, originals)).sum(-1)
        for row, s in zip(rows, sims.tolist()):
            row["clip_image"] = s
        given = [i for i, c in enumerate(captions) if c]
        if given:
            text = self._batched(self.clip.text_features, [captions[i] for i in given])
            for i, s in zip(given, (emb_decoded[given] * text).sum(-1).tolist()):
                rows[i]["clip_text"] = s

    @staticmethod
    def _batched(embed, items: list, size: int = 64) -> torch.Tensor:
        return torch.cat([embed(items[i:i + size]) for i in range(0, len(items), size)])

    def _add_referee(self, rows, originals, decoded, truths) -> None:
        from .tinyworld.scenes import caption_accuracy, parse_caption

        for row, d in zip(rows, self.referee.distance(decoded, originals).tolist()):
            row["referee_distance"] = d
        judged = [i for i, t in enumerate(truths or []) if t is not None]
        readings = self.referee.read([decoded[i] for i in judged]) if judged else []
        for i, reading in zip(judged, readings):
            try:
                truth = parse_caption(truths[i])
            except ValueError as err:
                raise ValueError(f"truths[{i}] is not a tiny-world caption ({err}): {truths[i]!r}") from None
            acc = caption_accuracy([reading], [truth])
            rows[i].update({f"referee_{k}": float(acc[k]) for k in ("exact", *REFEREE_ATTRIBUTES)})


def _pixel_scores(original: Image.Image, decoded: Image.Image) -> dict:
    from .data import image_to_tensor

    if original.size != decoded.size:
        raise ValueError(f"decoded image is {decoded.size[0]}×{decoded.size[1]}, its original "
                         f"{original.size[0]}×{original.size[1]}")
    x, y = image_to_tensor(original), image_to_tensor(decoded)
    row = {"psnr": psnr(x, y)}
    if min(original.size) >= 11:
        row["ssim"] = ssim(x, y)
    if min(original.size) > 160:
        row["ms_ssim"] = ms_ssim(x, y)
    return row


# ---------------------------------------------------------------- Bjøntegaard deltas

def _sign(key: str) -> float:
    return -1.0 if key in LOWER_IS_BETTER else 1.0


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def monotone(rows: list[dict], key: str = "psnr") -> list[dict]:
    """The points of a curve, by rate, whose quality beats every cheaper point's (BD fits need monotone curves).

    "Beats" follows :data:`LOWER_IS_BETTER`; points without a finite ``bpp`` and ``key`` are left out.
    """
    sign, kept = _sign(key), []
    for r in sorted((r for r in rows if _finite(r.get("bpp")) and _finite(r.get(key))), key=lambda r: r["bpp"]):
        if kept and r["bpp"] == kept[-1]["bpp"] and sign * r[key] > sign * kept[-1][key]:
            kept[-1] = r  # the same rate, better quality: keep the better point only
        elif not kept or (sign * r[key] > sign * kept[-1][key] and r["bpp"] > kept[-1]["bpp"]):
            kept.append(r)
    return kept


def _fit_inputs(anchor, test, key):
    """(rates, oriented qualities) of both monotone curves, or None when either has fewer than 2 points."""
    sign = _sign(key)
    a, t = monotone(anchor, key), monotone(test, key)
    if len(a) < 2 or len(t) < 2:
        return None
    return ([r["bpp"] for r in a], [sign * r[key] for r in a], [r["bpp"] for r in t], [sign * r[key] for r in t])


def _overlap(low_high_a, low_high_b) -> tuple[float, float] | None:
    lo, hi = max(low_high_a[0], low_high_b[0]), min(low_high_a[1], low_high_b[1])
    return (lo, hi) if hi > lo else None


def bd_rate(anchor: list[dict], test: list[dict], key: str = "psnr", method: str = "pchip") -> float | None:
    """BD-rate (%) of ``test`` against ``anchor`` over their overlapping quality range; negative: test saves bits.

    ``anchor``/``test`` are curve points ``{"bpp": ..., key: ...}``. None when the quality ranges do not
    overlap or a curve has fewer than two monotone points. ``method``: pchip (default), akima or cubic.
    """
    fit = _fit_inputs(anchor, test, key)
    if fit is None or _overlap((min(fit[1]), max(fit[1])), (min(fit[3]), max(fit[3]))) is None:
        return None
    return _bd("bd_rate", fit, method)


def bd_quality(anchor: list[dict], test: list[dict], key: str = "psnr", method: str = "pchip") -> float | None:
    """BD-quality of ``test`` minus ``anchor`` in the metric's units (BD-PSNR for psnr) over the overlapping rates.

    For a lower-is-better metric a negative value means the test is better. None as for :func:`bd_rate`.
    """
    fit = _fit_inputs(anchor, test, key)
    if fit is None or _overlap((min(fit[0]), max(fit[0])), (min(fit[2]), max(fit[2]))) is None:
        return None
    value = _bd("bd_psnr", fit, method)
    return None if value is None else _sign(key) * value


def _bd(function: str, fit, method: str) -> float | None:
    import bjontegaard as bd

    with warnings.catch_warnings():  # the package warns when the overlap is under 75 %; callers report the range
        warnings.simplefilter("ignore")
        value = getattr(bd, function)(*fit, method=method, require_matching_points=False)
    return float(value) if math.isfinite(value) else None


def _matrices(rows: list[dict], methods: tuple[str, str], key: str):
    """Per method: points, and (images × points) arrays of bpp and ``key`` over the images every point has."""
    table: dict[tuple, dict] = {}
    points = {m: set() for m in methods}
    for r in rows:
        if r.get("method") in points:
            points[r["method"]].add(r["point"])
            if _finite(r.get("bpp")) and _finite(r.get(key)):
                table[(r["method"], r["point"], r["image"])] = r
    points = {m: sorted(p, key=str) for m, p in points.items()}
    images = sorted({img for (_, _, img) in table}, key=str)
    if not all(points.values()):  # a method with no rows: no curve to compare
        images = []
    images = [i for i in images if all((m, p, i) in table for m in methods for p in points[m])]
    arrays = {m: tuple(np.array([[table[(m, p, i)][f] for p in points[m]] for i in images], dtype=np.float64)
                       .reshape(len(images), len(points[m])) for f in ("bpp", key)) for m in methods}
    return points, images, arrays


def _curve(bpp: np.ndarray, quality: np.ndarray, key: str) -> list[dict]:
    return [{"bpp": float(b), key: float(q)} for b, q in zip(bpp, quality)]


def bd_with_ci(rows: list[dict], anchor: str, test: str, key: str, *, n_boot: int = 1000, seed: int = 0,
               level: float = 0.95) -> dict:
    """BD-rate and BD-quality of method ``test`` against ``anchor`` with percentile bootstrap intervals over images.

    ``rows`` are per-image records ``{"image", "method", "point", "bpp", key, ...}``. Curves are the
    per-(method, point) means over the images that have every point of both methods with a finite
    ``key``; each of ``n_boot`` resamples draws those images with replacement (the same draw for both
    methods, seeded). Returns ``{"bd_rate", "bd_rate_ci": [lo, hi], "bd_quality", "bd_quality_ci",
    "overlap": [lo, hi] (the metric range both curves cover), "images": n, "boot_valid": k}`` where k
    counts the resamples with a BD-rate (curves that overlap in quality); BD-quality needs overlapping
    rates instead, so a test curve at other rates has a BD-rate and its interval but no BD-quality.
    """
    points, images, arrays = _matrices(rows, (anchor, test), key)
    n = len(images)
    out = {"bd_rate": None, "bd_rate_ci": None, "bd_quality": None, "bd_quality_ci": None, "overlap": None,
           "images": n, "boot_valid": 0}
    if n == 0 or anchor == test:
        return out
    curves = {m: _curve(b.mean(0), q.mean(0), key) for m, (b, q) in arrays.items()}
    out["bd_rate"] = bd_rate(curves[anchor], curves[test], key)
    out["bd_quality"] = bd_quality(curves[anchor], curves[test], key)
    out["overlap"] = _quality_overlap(curves[anchor], curves[test], key)
    # Resampling with replacement = multinomial counts per image; the means are then one matrix product per array.
    counts = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=n_boot) / n
    means = {m: (counts @ b, counts @ q) for m, (b, q) in arrays.items()}
    rates, qualities = [], []
    for k in range(n_boot):
        a, t = (_curve(means[m][0][k], means[m][1][k], key) for m in (anchor, test))
        r, q = bd_rate(a, t, key), bd_quality(a, t, key)
        if r is not None:
            rates.append(r)
        if q is not None:  # BD-quality needs overlapping rates, BD-rate overlapping quality: either can exist alone
            qualities.append(q)
    out["boot_valid"] = len(rates)
    tail = 100 * (1 - level) / 2
    if rates:
        out["bd_rate_ci"] = [float(v) for v in np.percentile(rates, [tail, 100 - tail])]
    if qualities:
        out["bd_quality_ci"] = [float(v) for v in np.percentile(qualities, [tail, 100 - tail])]
    return out


def _quality_overlap(anchor: list[dict], test: list[dict], key: str) -> list[float] | None:
    a, t = monotone(anchor, key), monotone(test, key)
    if not a or not t:
        return None
    span = _overlap(*(sorted((c[0][key], c[-1][key])) for c in (a, t)))
    return None if span is None else [float(span[0]), float(span[1])]


# ---------------------------------------------------------------- reported curves

def reported_curves(path: str | Path | None = None) -> dict[str, list[dict]]:
    """The paper's digitised Kodak curves: ``{method: [{"bpp", "lpips_vgg"}, ...]}`` by rate (reported, not ours).

    ``path`` defaults to ``data/reference/paper_kodak_lpips_vgg.csv`` (provenance in its README).
    """
    from .errors import ItcError

    path = Path(path) if path else REPORTED_CSV
    if not path.is_file():
        raise ItcError(f"{path}: no such reported-curves CSV")
    curves: dict[str, list[dict]] = {}
    with open(path, newline="") as f:
        try:
            for r in csv.DictReader(f):
                curves.setdefault(r["method"], []).append({"bpp": float(r["bpp"]), "lpips_vgg": float(r["lpips_vgg"])})
        except (KeyError, TypeError, ValueError) as err:
            raise ItcError(f"{path}: expected columns method,bpp,lpips_vgg with numbers ({type(err).__name__}: "
                           f"{err})") from None
    return {m: sorted(c, key=lambda p: p["bpp"]) for m, c in curves.items()}
