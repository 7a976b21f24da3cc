"""Evaluation runs (``itc eval``): every image × method × rate point, resumable and shardable.

    summary = run_eval(EvalSettings(preset="tiny", dataset="tiny", limit=20), "outputs/eval")

    itc eval --limit 200 --out outputs/eval                                           # one process
    accelerate launch --multi_gpu --num_processes 2 -m itc_core.cli eval --limit 200  # two (torchrun, gloo)

(accelerate 1.15 starts several CPU processes through torchrun with ``--multi_gpu``,
which works on a machine without GPUs too, or through MPI with ``--cpu --num_processes N
--mpirun_hostfile F``; plain ``--cpu --num_processes N`` without MPI starts one process.)

Each finished (image, method, point) is one JSON line appended to
``OUT/results.jsonl``, flushed and fsynced: a killed run resumes where it
stopped (a torn last line is dropped and redone). Under ``accelerate launch``
each process takes the images ``i % world == rank`` and appends to its own
``results.rankR-of-W.jsonl``; after every process is done, rank 0 merges the
parts into ``results.jsonl`` (sorted, each key once) and writes
``summary.json``: a pure function of the rows (no timings), so a resumed or a
sharded run writes the same file as an uninterrupted single process.

Methods (:data:`METHODS`), each a real configuration, every rate from real bytes:

- ``lic``: the LIC's ``.itc`` file without caption, the bare reconstruction.
- ``lic+restorer``: the same file, restored with the empty caption.
- ``ours``: the ``.itc`` file with the LMM's caption coded inside (whole-file bytes),
  decoded and restored with the decoded caption, as ``itc decode`` does.
- ``ours-full``: the same with the preset's semantic-perceptual LIC
  (``image_codec.variants.semantic``); reported missing when the preset has none.
- ``jpeg``, ``webp``: Pillow files at several qualities (:mod:`itc_core.rd`'s lists).
- ``misc``: a MISC-style pixel mode: the image block-averaged and colour-quantised
  (median cut), palette + indices coded with raw deflate, and the LMM's caption
  coded with ``lmm-ac`` given the upsampled pixel map (both ends have it); the
  decoder decodes both and restores the map with the caption through the same restorer.

Determinism: the LMM's caption is chosen once per image (the preset's selection),
the restorer's noise is the preset's seed (what ``itc decode`` uses), each
(image, method) is computed as one batch over its rate points whatever was
already done, and ``itc eval`` pins torch to one thread per process.
"""

from __future__ import annotations

import copy
import json
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

from .errors import ConfigError, ItcError, WeightsError

if TYPE_CHECKING:  # numpy, PIL and tqdm are imported where used: the CLI's parser reads METHODS at every start
    from PIL import Image

__all__ = ["METHODS", "MISC_POINTS", "BD_METRICS", "EvalSettings", "MethodRunner", "run_eval", "read_rows", "summarise",
           "merge_results", "misc_encode", "misc_decode", "format_table"]

METHODS = ("lic", "lic+restorer", "ours", "ours-full", "jpeg", "webp", "misc")
# (block side in px, palette colours): from a few hundred bits of pixel map to a few thousand at 64×64.
MISC_POINTS = ((32, 4), (16, 4), (8, 4), (8, 8), (4, 8), (4, 16))
BD_METRICS = ("referee_distance", "referee_exact", "lpips", "psnr", "clip_image")
TABLE_METRICS = ("referee_distance", "referee_exact", "psnr", "clip_image", "lpips")
_ROW_NUMBERS = ("bpp", "bpp_image", "bpp_text", "bpp_overhead", "bytes")
_LIC_METHODS = ("lic", "lic+restorer", "ours", "ours-full")
_RESTORED = ("lic+restorer", "ours", "ours-full", "misc")
_CAPTIONED = ("ours", "ours-full", "misc")
_MISC_HEADER = ">HHBB"  # width, height, block, palette size


@dataclass
class EvalSettings:
    """What ``itc eval`` runs.

    Attributes:
        methods: which of :data:`METHODS` to run.
        qualities: LIC rate points (default: every one the preset, or its semantic variant, offers).
        pillow_qualities: JPEG and WebP qualities (default: ``rd.JPEG_QUALITIES`` / ``rd.WEBP_QUALITIES``).
        misc_points: (block, colours) rate points of ``misc``.
        steps: restorer denoising steps (default: the preset's).
        anchor: the method the BD table is against; boot: bootstrap resamples per BD figure.
    """

    preset: str = "tiny"
    dataset: str = "tiny"
    methods: tuple[str, ...] = METHODS
    limit: int | None = None
    qualities: tuple[int, ...] | None = None
    pillow_qualities: tuple[int, ...] | None = None
    misc_points: tuple[tuple[int, int], ...] = MISC_POINTS
    steps: int | None = None
    anchor: str = "lic"
    boot: int = 1000

    def validate(self) -> None:
        """Raise ConfigError on an unknown method, an anchor not run, or a bad rate point."""
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ConfigError(f"unknown method {unknown[0]!r}; valid: {', '.join(METHODS)}")
        if not self.methods:
            raise ConfigError("no method to run")
        if self.anchor not in self.methods:
            raise ConfigError(f"anchor {self.anchor!r} is not among the methods run ({', '.join(self.methods)})")
        for block, colours in self.misc_points:
            if not (1 <= block <= 255 and 2 <= colours <= 256):
                raise ConfigError(f"misc point {block}x{colours}: block 1-255 px, 2-256 colours")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"steps must be a positive integer, got {self.steps}")
        if self.boot < 0:
            raise ConfigError(f"boot must be >= 0, got {self.boot}")

    def identity(self) -> dict:
        """The settings a row's values depend on (the preset's whole configuration by its hash): a results
        folder holds rows of one identity only. Rate points are in the rows' keys."""
        import dataclasses
        import hashlib

        from .config import load_config

        values = dataclasses.asdict(load_config(self.preset))
        if not values["image_codec"]["sizes"]:  # added later: unset, it must not orphan earlier results folders
            del values["image_codec"]["sizes"]
        if not values["restorer"]["guidance_by_quality"]:
            del values["restorer"]["guidance_by_quality"]  # likewise
        if values["caption"]["rank_lm_weight"] == 0 or values["caption"]["select"] == "greedy":
            del values["caption"]["rank_lm_weight"]  # likewise; and greedy rows never rank
        values.pop("domain", None)  # rows pass their caption and restore themselves: the domain gate never acts
        config = json.dumps(values, sort_keys=True, default=str)
        return {"preset": self.preset, "config_sha256": hashlib.sha256(config.encode()).hexdigest()[:16],
                "weights_sha256": weights_sha256(values), "dataset": self.dataset, "steps": self.steps}


WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pth", "*.pt")


def _local_model_files(values) -> list[Path]:
    """The local weight files behind every model reference (a string with a ``/``) in a configuration dict
    (``{quality}`` patterns expanded over the qualities given beside them; a folder: the weight files in it).
    Hub ids, which name no local file, are left out."""
    from .config import resolve_model

    if isinstance(values, dict):
        qualities = values.get("qualities") or []
        found = []
        for value in values.values():
            if isinstance(value, str) and "{quality}" in value:
                found += _local_model_files([value.format(quality=q) for q in qualities])
            else:
                found += _local_model_files(value)
        return found
    if isinstance(values, list):
        return [f for value in values for f in _local_model_files(value)]
    if not isinstance(values, str) or "/" not in values:
        return []
    try:
        path = Path(resolve_model(values))
    except (OSError, ValueError):
        return []
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(f for pattern in WEIGHT_PATTERNS for f in path.rglob(pattern) if f.is_file())
    return []


def weights_sha256(values: dict) -> str:
    """16 hex digits of SHA-256 over the local weights a configuration dict names, and the tiny referee's
    (what scores the rows): models retrained under the same paths make another eval identity."""
    import hashlib

    from .config import data_dir

    referee = data_dir() / "tiny" / "referee"
    files = sorted(set(_local_model_files(values) + _local_model_files(str(referee) if referee.is_dir() else "")))
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode() + b"\0")  # the name too: swapping two rate points' files changes it
        with f.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------- MISC-style pixel mode

def misc_encode(image: Image.Image, block: int, colours: int) -> bytes:
    """The pixel map of ``image``: block-averaged, median-cut to ``colours``, palette + indices in raw deflate."""
    import numpy as np
    from PIL import Image

    small = image.convert("RGB").reduce(block)
    quantised = small.quantize(colors=colours, method=Image.Quantize.MEDIANCUT)
    indices = np.asarray(quantised, dtype=np.uint8)
    used = int(indices.max()) + 1
    palette = bytes(quantised.getpalette()[: 3 * used])
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate: no zlib header or checksum to pay for
    body = deflate.compress(palette + indices.tobytes()) + deflate.flush()
    return struct.pack(_MISC_HEADER, image.width, image.height, block, used) + body


def misc_decode(data: bytes) -> tuple[Image.Image, bytes]:
    """(the pixel map upsampled bilinearly to the image size, the bytes after the map: the caption payload)."""
    import numpy as np
    from PIL import Image

    width, height, block, used = struct.unpack_from(_MISC_HEADER, data)
    inflate = zlib.decompressobj(-15)
    raw = inflate.decompress(data[struct.calcsize(_MISC_HEADER):])
    w, h = -(-width // block), -(-height // block)
    if not inflate.eof or len(raw) != 3 * used + w * h:
        raise ItcError("misc pixel map does not decode")
    palette = np.frombuffer(raw[: 3 * used], np.uint8).reshape(used, 3)
    pixels = palette[np.frombuffer(raw[3 * used:], np.uint8).reshape(h, w)]
    return Image.fromarray(pixels, "RGB").resize((width, height), Image.Resampling.BILINEAR), inflate.unused_data


# ---------------------------------------------------------------- methods

class MethodRunner:
    """The models of one run and, per image, each method's decoded images and scored rows at all its rate points.

        runner = MethodRunner(settings, dataset[0])
        runner.begin_image(dataset[3])
        runner.decoded("ours")          # [(point, decoded PIL image), ...]
        runner.rows("ours")             # one scored row per point, as results.jsonl holds them
    """

    def __init__(self, settings: EvalSettings, first_item):
        from .codec import ImageTextCodec
        from .metrics import Scorer

        self.settings = settings
        self.codec = ImageTextCodec.from_preset(settings.preset)
        self.missing: dict[str, str] = {}
        self.semantic = None
        self._check_methods()
        referee = None
        if first_item.truth is not None:
            from .tinyworld.referee import Referee
            referee = Referee.load()
        self.scorer = Scorer.for_codec(self.codec, referee)
        if any(m in _RESTORED and m not in self.missing for m in settings.methods):
            self.codec.restorer.pipeline.set_progress_bar_config(disable=True)
        self._cache: dict = {}

    def _check_methods(self) -> None:
        cfg = self.codec.config
        for m in self.settings.methods:
            if m in _RESTORED and cfg.restorer.kind is None:
                self.missing[m] = f"preset {cfg.name} has no restorer (restorer.kind)"
            elif m in _CAPTIONED and not cfg.caption.lmm:
                self.missing[m] = f"preset {cfg.name} has no LMM (caption.lmm)"
        if "ours-full" in self.settings.methods and "ours-full" not in self.missing:
            self.semantic, reason = self._semantic_codec()
            if reason:
                self.missing["ours-full"] = reason
        for m in self.settings.methods:
            if m not in self.missing and not self.points(m):
                self.missing[m] = "none of its rate points is selected (--qualities)"

    def _semantic_codec(self):
        """(the codec with the preset's semantic LIC variant, None) or (None, why it is missing)."""
        from .codec import ImageTextCodec

        cfg = copy.deepcopy(self.codec.config)
        ic = cfg.image_codec
        variant = (ic.variants or {}).get("semantic")
        if not variant:
            return None, f"preset {cfg.name} has no semantic LIC variant (image_codec.variants.semantic)"
        ic.variant, ic.weights = "semantic", variant.get("weights")
        ic.qualities = list(variant.get("qualities", ic.qualities))
        ic.quality = ic.qualities[0]
        semantic = ImageTextCodec(cfg)
        semantic._restorer, semantic._lmm = self.codec.restorer, self.codec.lmm  # only the LIC differs
        try:
            for q in ic.qualities:
                semantic.image_codec(q)
        except WeightsError as err:
            return None, f"semantic LIC not available: {err}"
        return semantic, None

    def lic_qualities(self, codec) -> list[int]:
        """The codec's rate points selected by ``settings.qualities``."""
        chosen = self.settings.qualities
        return [q for q in codec.config.image_codec.qualities if chosen is None or q in chosen]

    def points(self, method: str) -> list[str]:
        """Names of ``method``'s rate points in this run ("q1", "q50", "b8c4")."""
        from .rd import JPEG_QUALITIES, WEBP_QUALITIES

        if method in ("lic", "lic+restorer", "ours"):
            return [f"q{q}" for q in self.lic_qualities(self.codec)]
        if method == "ours-full":
            return [f"q{q}" for q in self.lic_qualities(self.semantic)] if self.semantic else []
        if method in ("jpeg", "webp"):
            default = JPEG_QUALITIES if method == "jpeg" else WEBP_QUALITIES
            return [f"q{q}" for q in (self.settings.pillow_qualities or default)]
        return [f"b{b}c{c}" for b, c in self.settings.misc_points]

    def begin_image(self, item) -> None:
        """Forget the previous image's shared work (LIC files, the LMM's caption)."""
        self._cache = {"item": item}

    def caption(self) -> str:
        """The LMM's caption of the current image (computed once, the preset's selection)."""
        if "caption" not in self._cache:
            self._cache["caption"] = self.codec.caption(self._cache["item"].image)
        return self._cache["caption"]

    def _lic_files(self) -> list[tuple[str, dict, Image.Image]]:
        """Per selected quality: (point, sizes of the caption-less .itc file, its decoded reconstruction)."""
        if "lic" not in self._cache:
            from .codec import describe

            out = []
            for q in self.lic_qualities(self.codec):
                data = self.codec.encode(self._cache["item"].image, q, caption=False).data
                decoded = self.codec.decode(data, restore=False)
                out.append((f"q{q}", describe(data, decoded), decoded.reconstruction))
            self._cache["lic"] = out
        return self._cache["lic"]

    def _restore(self, images: list[Image.Image], captions: list[str], qualities: list[int | None]) -> list[Image.Image]:
        return self.codec.restorer.restore_batch(images, captions, steps=self.settings.steps, qualities=qualities)

    def rows(self, method: str) -> list[dict]:
        """One row per rate point of ``method`` for the current image, scored."""
        return self._scored(method, *self._outputs(method))

    def scored_outputs(self, method: str) -> tuple[list[dict], list[Image.Image]]:
        """``rows(method)`` and the decoded images they score, from one decode (the notebook's gallery)."""
        parts, images = self._outputs(method)
        return self._scored(method, parts, images), images

    def decoded(self, method: str) -> list[tuple[str, Image.Image]]:
        """(point, what the decoder outputs) per rate point of ``method`` for the current image."""
        parts, images = self._outputs(method)
        return [(point, image) for (point, _, _), image in zip(parts, images)]

    def _outputs(self, method: str):
        """([(point, rate fields, coded caption or None)], decoded images) of ``method`` for the current image."""
        if method in self.missing:
            raise ConfigError(f"method {method} is missing: {self.missing[method]}")
        if method in ("lic", "lic+restorer"):
            files = self._lic_files()
            decoded = [recon for _, _, recon in files]
            if method == "lic+restorer":
                decoded = self._restore(decoded, [""] * len(files), self.lic_qualities(self.codec))
            parts = [(point, _itc_sizes(info), None) for point, info, _ in files]
        elif method in ("ours", "ours-full"):
            parts, decoded = self._ours(self.codec if method == "ours" else self.semantic)
        elif method in ("jpeg", "webp"):
            parts, decoded = self._pillow(method)
        else:
            parts, decoded = self._misc()
        return parts, decoded

    def _ours(self, codec):
        from .codec import describe

        image, caption = self._cache["item"].image, self.caption()
        parts, recons, captions = [], [], []
        for q in self.lic_qualities(codec):
            data = codec.encode(image, q, caption).data
            decoded = codec.decode(data, restore=False)
            if (decoded.caption or "") != (caption or ""):  # an empty caption is stored as none
                raise ItcError(f"the decoded caption differs from the coded one at q{q}")
            parts.append((f"q{q}", _itc_sizes(describe(data, decoded)), decoded.caption))
            recons.append(decoded.reconstruction)
            captions.append(decoded.caption)
        return parts, self._restore(recons, captions, self.lic_qualities(codec))

    def _pillow(self, method: str):
        from .rd import pillow_round_trip

        image, fmt = self._cache["item"].image, method.upper()
        pixels = image.width * image.height
        parts, decoded = [], []
        for point in self.points(method):
            size, back = pillow_round_trip(image, fmt, int(point[1:]))
            decoded.append(back)
            parts.append((point, {"bytes": size, "bpp": 8 * size / pixels, "bpp_image": 8 * size / pixels,
                                  "bpp_text": 0.0, "bpp_overhead": 0.0}, None))
        return parts, decoded

    def _misc(self):
        from .caption_codec import compress_caption, decompress_caption

        image, caption, lm = self._cache["item"].image, self.caption(), self.codec.lmm
        pixels = image.width * image.height
        parts, maps, captions = [], [], []
        for block, colours in self.settings.misc_points:
            pixel_map = misc_encode(image, block, colours)
            context, _ = misc_decode(pixel_map)
            text = compress_caption(caption, "lmm-ac", lm, context).data
            seen, payload = misc_decode(pixel_map + text)
            decoded_caption = decompress_caption(payload, "lmm-ac", lm, seen)
            if decoded_caption != caption:
                raise ItcError(f"misc b{block}c{colours}: the decoded caption differs from the coded one")
            size = len(pixel_map) + len(text)
            parts.append((f"b{block}c{colours}", {"bytes": size, "bpp": 8 * size / pixels,
                                                  "bpp_image": 8 * len(pixel_map) / pixels,
                                                  "bpp_text": 8 * len(text) / pixels, "bpp_overhead": 0.0},
                          decoded_caption))
            maps.append(seen)
            captions.append(decoded_caption)
        return parts, self._restore(maps, captions, [None] * len(maps))  # no LIC rate point: the default guidance

    def _scored(self, method: str, parts, decoded) -> list[dict]:
        item = self._cache["item"]
        n = len(parts)
        scores = self.scorer.score([item.image] * n, decoded, [item.caption] * n,
                                   [item.truth] * n if item.truth is not None else None)
        return [{"image": item.name, "method": method, "point": point, **sizes, "caption": caption, **score}
                for (point, sizes, caption), score in zip(parts, scores)]


def _itc_sizes(info: dict) -> dict:
    """The rate fields of a row from ``codec.describe`` of a decoded ``.itc`` file."""
    return {"bytes": info["bytes_total"], "bpp": info["bpp_total"], "bpp_image": info["bpp_image"],
            "bpp_text": info["bpp_text"], "bpp_overhead": info["bpp_overhead"]}


# ---------------------------------------------------------------- results files

def _key(row: dict) -> tuple[str, str, str]:
    return row["image"], row["method"], row["point"]


def read_rows(path: Path, repair: bool = False) -> list[dict]:
    """The rows of a results file; an unfinished last line (no newline yet) is ignored, and cut off the file
    when ``repair``. A damaged complete line is an error: appends never leave one.
    """
    if not path.is_file():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1  # everything after the last newline is an append that did not finish
    rows = []
    for number, line in enumerate(data[:end].splitlines(), 1):
        try:
            rows.append(json.loads(line))
        except ValueError:
            raise ItcError(f"{path}: line {number} is damaged; remove it to resume") from None
    if repair and end < len(data):
        with open(path, "r+b") as f:
            f.truncate(end)
            os.fsync(f.fileno())
    return rows


class _Appender:
    """Appends rows to a JSONL file, each line flushed and fsynced before the next is written."""

    def __init__(self, path: Path):
        self.file = open(path, "a", encoding="utf-8")

    def write(self, row: dict) -> None:
        self.file.write(json.dumps(row, sort_keys=True) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # one per process: shards may write run.json at once
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def _parts(out: Path) -> list[Path]:
    return sorted(out.glob("results.rank*.jsonl"))


def _check_identity(out: Path, settings: EvalSettings) -> None:
    """Refuse a results folder made with settings that change the rows; record them in a new one."""
    path = out / "run.json"
    identity = settings.identity()
    if path.is_file():
        stored = json.loads(path.read_text())
        legacy = "weights_sha256" not in stored  # folders from before weights were recorded: taken as made with these
        stored.setdefault("weights_sha256", identity["weights_sha256"])
        if stored != identity:
            changed = "retrained or other model weights" if {**stored, "weights_sha256": ""} == {
                **identity, "weights_sha256": ""} else "other settings"
            raise ConfigError(f"{out} holds a run with {changed} ({stored}, not {identity}): pick another --out")
        if not legacy:
            return
    _write_atomic(path, json.dumps(identity, sort_keys=True) + "\n")


def merge_results(out: Path) -> list[dict]:
    """Fold the part files into ``results.jsonl`` (each key once, sorted) and remove them; returns the rows."""
    rows = {}
    for path in [out / "results.jsonl", *_parts(out)]:
        for row in read_rows(path):
            rows.setdefault(_key(row), row)
    merged = [rows[k] for k in sorted(rows)]
    _write_atomic(out / "results.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in merged))
    for path in _parts(out):
        path.unlink()
    return merged


# ---------------------------------------------------------------- the run

def run_eval(settings: EvalSettings, out: str | Path, *, rank: int = 0, world: int = 1, barrier=None,
             progress: bool = True) -> dict | None:
    """Run (or resume) ``settings`` into the folder ``out``; returns the summary (None on ranks other than 0).

    With ``world`` > 1 this process takes the images ``i % world == rank``; ``barrier()`` must wait for
    every process (accelerate's ``wait_for_everyone``), after which rank 0 merges and summarises.
    """
    from tqdm.auto import tqdm

    from .data import open_dataset

    settings.validate()
    dataset = open_dataset(settings.dataset, settings.limit)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_identity(out, settings)
    runner = MethodRunner(settings, dataset[0])
    methods = [m for m in settings.methods if m not in runner.missing]
    if settings.anchor not in methods:
        raise ConfigError(f"anchor {settings.anchor} cannot run: {runner.missing[settings.anchor]}")
    points = {m: runner.points(m) for m in methods}
    own = out / ("results.jsonl" if world == 1 else f"results.rank{rank}-of-{world}.jsonl")
    done = {_key(r) for r in read_rows(own, repair=True)}
    for path in {out / "results.jsonl", *_parts(out)} - {own}:
        done |= {_key(r) for r in read_rows(path)}
    mine = [i for i in range(len(dataset)) if i % world == rank]
    todo = [(i, m) for i in mine for m in methods
            if any((dataset.names[i], m, p) not in done for p in points[m])]
    writer = _Appender(own)
    try:
        bar = tqdm(todo, desc=f"itc eval{f' [{rank + 1}/{world}]' if world > 1 else ''}", unit="run",
                   disable=not progress, position=rank if world > 1 else None)
        current = None
        for i, method in bar:
            if i != current:
                current = i
                runner.begin_image(dataset[i])
            for row in runner.rows(method):
                if _key(row) not in done:
                    writer.write(row)
    finally:
        writer.close()
    if barrier is not None:
        barrier()
    if rank != 0:
        return None
    rows = merge_results(out)
    summary = summarise(rows, settings, dataset.names, points, runner.missing)
    _write_atomic(out / "summary.json", json.dumps(summary, indent=1, sort_keys=False) + "\n")
    return summary


def summarise(rows: list[dict], settings: EvalSettings, names: list[str], points: dict[str, list[str]],
              missing: dict[str, str]) -> dict:
    """``summary.json``: means per (method, point) over the run's images and the BD table against the anchor.

    Only rows of this run's images, methods and points count; the means' points are ordered by rate.
    """
    from .metrics import bd_with_ci

    wanted = set(names)
    rows = sorted((r for r in rows if r["image"] in wanted and r["point"] in points.get(r["method"], ())),
                  key=_key)
    means = {}
    for method, method_points in points.items():
        per_point = {}
        for point in method_points:
            mine = [r for r in rows if r["method"] == method and r["point"] == point]
            if mine:
                per_point[point] = _means(mine)
        means[method] = dict(sorted(per_point.items(), key=lambda kv: (kv[1]["bpp"], kv[0])))
    anchor_rows = [r for r in rows if r["method"] == settings.anchor]
    bd = {}
    for metric in BD_METRICS:
        if not anchor_rows or not all(metric in r for r in anchor_rows):
            continue
        bd[metric] = {m: bd_with_ci(rows, settings.anchor, m, metric, n_boot=settings.boot, seed=0)
                      for m in points if m != settings.anchor
                      and any(metric in r for r in rows if r["method"] == m)}
    return _clean({"preset": settings.preset, "dataset": settings.dataset, "images": len({r["image"] for r in rows}),
                   "methods": list(points), "anchor": settings.anchor, "means": means, "bd": bd,
                   "missing_methods": dict(sorted(missing.items()))})


def _means(rows: list[dict]) -> dict:
    import numpy as np

    keys = sorted({k for r in rows for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    out = {"images": len(rows)}
    for k in keys:
        values = [r[k] for r in rows if k in r]
        out[k] = float(np.mean(values))
    return {k: out[k] for k in ("images", *_ROW_NUMBERS, *sorted(set(keys) - set(_ROW_NUMBERS)))}


def _clean(value):
    """JSON-safe: NaN and infinities (PSNR of an identical image) as None; json.dumps would write invalid JSON."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def format_table(summary: dict) -> str:
    """The summary as a plain-text table (method, point, bpp, main metrics) and the BD figures."""
    metrics = [m for m in TABLE_METRICS if any(m in p for pts in summary["means"].values() for p in pts.values())]
    lines = [f"{'method':<13}{'point':<7}{'bpp':>8}{'bpp_text':>9}" + "".join(f"{m:>18}" for m in metrics)]
    for method, pts in summary["means"].items():
        for point, p in pts.items():
            lines.append(f"{method:<13}{point:<7}{p['bpp']:8.4f}{p['bpp_text']:9.4f}"
                         + "".join(f"{p[m]:18.4f}" if p.get(m) is not None else f"{'-':>18}" for m in metrics))
    for metric, table in summary["bd"].items():
        for method, bd in table.items():
            lines.append(f"BD-rate vs {summary['anchor']} on {metric}, {method}: " + _bd_text(bd))
    for method, reason in summary["missing_methods"].items():
        lines.append(f"missing: {method}: {reason}")
    return "\n".join(lines)


def _bd_text(bd: dict) -> str:
    if bd.get("bd_rate") is None:
        return "no overlap"
    lo, hi = bd.get("bd_rate_ci") or (None, None)
    ci = f" [{lo:+.1f}, {hi:+.1f}]" if lo is not None and hi is not None else ""
    return f"{bd['bd_rate']:+.1f} %{ci}"

