"""Dataclass configs and the presets ``tiny``, ``laptop`` and ``paper``.

A preset is a YAML file in ``itc_core/presets/``; a user YAML file may name a
base preset with ``base: tiny`` and override any key. Unknown keys and
presets raise :class:`~itc_core.errors.ConfigError` listing the valid ones::

    cfg = load_config("tiny")                # a built-in preset
    cfg = load_config("my_run.yaml")         # a user file, e.g. {base: paper, image_codec: {quality: 2}}
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .caption_methods import CHOICES, LM_METHODS
from .errors import ConfigError

__all__ = ["ImageCodecConfig", "CaptionConfig", "RestorerConfig", "Config", "PRESETS", "PRESET_DIR", "SELECT_MODES",
           "RESTORER_KINDS", "DOMAINS", "load_config", "data_dir", "resolve_path", "resolve_model", "read_yaml",
           "build_dataclass", "merge_dicts"]

PRESET_DIR = Path(__file__).parent / "presets"
PRESETS = ("tiny", "laptop", "paper")
SELECT_MODES = ("greedy", "rerank", "rate-aware")  # caption.select: which caption the encoder codes (captioner.py)
RESTORER_KINDS = ("tiny", "sd-controlnet-img2img", "sd-img2img")
DOMAINS = ("tiny-world",)  # Config.domain: the images a preset's models know (itc_core/domain.py)


@dataclass
class ImageCodecConfig:
    """The learned image codec (LIC) stage.

    Attributes:
        architecture: a CompressAI zoo name, e.g. ``mbt2018-mean`` or ``cheng2020-attn``.
        qualities: the rate points this preset offers (1 = lowest rate).
        quality: the default rate point.
        pretrained: load CompressAI zoo weights (needs the internet on first use).
        metric: zoo weights' training metric, ``mse`` or ``ms-ssim``.
        N, M: channel widths for a custom-sized model (null: the zoo's for that quality).
        sizes: per rate point, other widths than ``N``/``M``, e.g. ``{7: {M: 192}}``: like
            CompressAI's zoo, a high rate point may need more latent channels than a low one.
        weights: a checkpoint path per quality, ``{quality}`` is filled in; relative
            paths start at the data directory. Overrides ``pretrained``.
        variant: ``base`` (``weights``), or the name of an entry of ``variants``.
        variants: other weights of the same architecture, e.g. the semantic-perceptual
            fine-tune: ``{semantic: {weights: ..., qualities: [1, 2, 3]}}``. A variant that does not
            ship says how to make it (``make``: a command, ``{quality}`` filled in per missing point).
    """

    architecture: str = "mbt2018-mean"
    qualities: list[int] = field(default_factory=lambda: [1, 2, 3, 4])
    quality: int = 1
    pretrained: bool = False
    metric: str = "mse"
    N: int | None = None
    M: int | None = None
    sizes: dict = field(default_factory=dict)
    weights: str | None = None
    variant: str = "base"
    variants: dict = field(default_factory=dict)

    def size(self, quality: int) -> tuple[int | None, int | None]:
        """(N, M) of the model at ``quality``: ``sizes[quality]`` where given, else ``N`` and ``M``."""
        own = self.sizes.get(quality, {})
        return own.get("N", self.N), own.get("M", self.M)

    def variant_weights(self) -> tuple[str | None, list[int]]:
        """(weights pattern, qualities) of the selected variant."""
        if self.variant == "base":
            return self.weights, self.qualities
        if self.variant not in self.variants:
            raise ConfigError(f"image_codec.variant {self.variant!r}; valid: base, {', '.join(self.variants) or '(none)'}")
        v = self.variants[self.variant]
        return v.get("weights"), v.get("qualities", self.qualities)


@dataclass
class CaptionConfig:
    """The caption stage: one LMM writes the caption and codes it.

    Attributes:
        lmm: a transformers image-text-to-text model: a hub id, an absolute path, or a
            path under the data directory (``tiny/lmm``); null: captions only from the user.
        prompt: the text before the caption, with the processor's image placeholder.
            Null: built from ``question`` with the processor's chat template.
        question: the instruction put in the chat template when ``prompt`` is null.
        max_new_tokens: caption length limit when generating.
        no_adjacent_repeat: generation never writes a phrase of up to this many tokens twice in a
            row ("checkered checkered"; 0: off).
        no_repeat_ngram_size: generation never repeats a token n-gram of this length (0: off).
        repetition_penalty: CTRL-style penalty on tokens already written (1.0: off).
        method: how the caption is coded in ``.itc`` files: one of ``caption_codec.METHODS``, or ``auto``
            (the default): per caption the cheapest of them at hand, recorded in the file.
        select: which caption the encoder codes (``captioner.SELECT_MODES``): ``greedy`` (the
            paper's), ``rerank`` (of ``candidates`` beam-search captions plus the greedy one, the one
            ``rank_clip``, else ``clip``, finds most similar to the original image, weighed with the
            LMM's belief by ``rank_lm_weight``) or ``rate-aware`` (among candidates within
            ``clip_margin`` of the best score, the fewest coded bits given the reconstruction).
        candidates: beams for ``rerank`` and ``rate-aware``.
        clip: the preset's CLIP: a hub id or a path (under the data directory). ``itc eval`` scores
            images and captions with it, and it ranks candidates unless ``rank_clip`` is set.
        rank_clip: a CLIP that ranks candidates instead of ``clip`` (the tiny world's is trained
            with one-attribute hard negatives, since its plain CLIP cannot tell shapes apart).
        clip_margin: margin of ``rate-aware``, in cosine-similarity units.
        rank_lm_weight: weight of the LMM's log-likelihood of a candidate (given the original) in the
            ranking score, relative to the CLIP's logit scale (``captioner.ranking_scores``): 0 = the
            CLIP alone, 1 = the product of the two models' distributions over the candidates.
    """

    lmm: str | None = "tiny/lmm"
    prompt: str | None = "<image>\nCaption:"
    question: str | None = None
    max_new_tokens: int = 48
    no_adjacent_repeat: int = 0
    no_repeat_ngram_size: int = 0
    repetition_penalty: float = 1.0
    method: str = "auto"
    select: str = "greedy"
    candidates: int = 4
    clip: str | None = None
    rank_clip: str | None = None
    clip_margin: float = 0.01
    rank_lm_weight: float = 0.0


@dataclass
class RestorerConfig:
    """The decoder's diffusion restorer (``itc_core.restorer``).

    Attributes:
        kind: ``tiny`` (trained here), ``sd-controlnet-img2img`` (SD 1.5 + tile ControlNet),
            ``sd-img2img`` (e.g. SD-Turbo), or null: no restorer, decoding gives the reconstruction.
        model: the pipeline: a hub id, an absolute path or a folder under the data directory.
        controlnet: the ControlNet for ``sd-controlnet-img2img``.
        scheduler: a diffusers scheduler class name replacing the model's (null: keep it).
        steps: denoising steps (img2img runs ``int(steps * strength)`` of them).
        strength: img2img strength (hub kinds).
        guidance: classifier-free guidance scale (tiny: 1 = the caption alone, 0 = no caption).
        guidance_by_quality: per rate point, another guidance than ``guidance``, e.g. ``{1: 2.0}``: the
            blurrier the reconstruction, the more the caption has to say (the decoder reads the point
            from the ``.itc`` file).
        negative_prompt: hub kinds, used when guidance > 1.
        controlnet_scale: ControlNet conditioning scale.
        colour_fix: DiffBIR's wavelet colour fix against the reconstruction.
        seed: the noise seed.
    """

    kind: str | None = "tiny"
    model: str | None = "tiny/restorer"
    controlnet: str | None = None
    scheduler: str | None = None
    steps: int = 4
    strength: float = 1.0
    guidance: float = 1.0
    guidance_by_quality: dict = field(default_factory=dict)
    negative_prompt: str | None = None
    controlnet_scale: float = 1.0
    colour_fix: bool = True
    seed: int = 0

    def guidance_at(self, quality: int | None) -> float:
        """The guidance for a reconstruction at rate point ``quality`` (None: unknown, ``guidance``)."""
        return self.guidance_by_quality.get(quality, self.guidance)


@dataclass
class Config:
    """A whole codec configuration. ``name`` is the preset's name (or the user file's stem).

    Attributes:
        domain: the only images the preset's models know (``DOMAINS``), or null: any image. With
            ``tiny-world``, an image that is not a tiny-world scene (``itc_core.domain``) gets a note naming
            another preset and no LMM caption, and the decoder restores only 64x64 files with a caption
            (``domain_check=False`` in ``encode``/``decode``, ``--no-domain-check``: as if null).
    """

    name: str = "tiny"
    description: str = ""
    image_codec: ImageCodecConfig = field(default_factory=ImageCodecConfig)
    caption: CaptionConfig = field(default_factory=CaptionConfig)
    restorer: RestorerConfig = field(default_factory=RestorerConfig)
    domain: str | None = None


def data_dir() -> Path:
    """Where shipped weights live: ``$ITC_DATA_DIR`` or the repository's ``data/``."""
    return Path(os.environ.get("ITC_DATA_DIR", Path(__file__).resolve().parents[1] / "data"))


def resolve_path(path: str) -> Path:
    """An absolute path as is; a relative one under :func:`data_dir`."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else data_dir() / p


def build_dataclass(cls, values: dict[str, Any], where: str):
    """Dataclass ``cls`` from ``values``, recursing into nested dataclasses; unknown keys are an error."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(fields)}")
    kwargs = {}
    for name, value in values.items():
        factory = fields[name].default_factory
        nested = factory() if factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(nested):
            kwargs[name] = build_dataclass(type(nested), value, f"{where}.{name}")
        else:
            _check_scalar(fields[name], value, f"{where}.{name}")
            kwargs[name] = value
    return cls(**kwargs)


_SCALARS = {"bool": (bool,), "int": (int,), "float": (int, float), "str": (str,)}
_WANTED = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "text"}


def _check_scalar(field: dataclasses.Field, value: Any, where: str) -> None:
    """A value of the field's kind where it is a plain number, flag or string (``int`` counts as ``float``;
    None where the annotation admits it), read off the annotation (``str | None``) or else the default."""
    names = [n.strip() for n in str(field.type).split("|")]
    if not set(names) <= set(_SCALARS) | {"None"}:
        names = [type(field.default).__name__]
    kinds = [n for n in names if n in _SCALARS]
    if not kinds or value is None and "None" in names:
        return
    allowed = tuple(t for n in kinds for t in _SCALARS[n])
    if not isinstance(value, allowed) or isinstance(value, bool) and bool not in allowed:
        raise ConfigError(f"{where} must be {' or '.join(_WANTED[n] for n in kinds)}, got {value!r}")


def merge_dicts(base: dict, override: dict) -> dict:
    """``base`` with ``override`` on top, nested mappings merged key by key (the other file's choices win)."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merge_dicts(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def read_yaml(path: Path) -> dict:
    """The mapping a YAML file holds; ConfigError (with line and column) for anything else."""
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a YAML file (not UTF-8 text)") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where} ({getattr(err, 'problem', None) or err})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return values


def _raw(name_or_path: str, seen: tuple = ()) -> dict:
    if name_or_path in PRESETS:
        values = read_yaml(PRESET_DIR / f"{name_or_path}.yaml")
        values.setdefault("name", name_or_path)
        return values
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml") or not path.is_file():
        raise ConfigError(f"unknown preset {name_or_path!r}; valid: {', '.join(PRESETS)} or a path to a .yaml file")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: 'base' chain loops back to itself")
    values = read_yaml(path)
    base = values.pop("base", None)
    if base is not None and not isinstance(base, str):
        raise ConfigError(f"{path}: base must be a preset name or a YAML path, got {base!r}")
    values.setdefault("name", path.stem)
    return _inherit(_raw(base, seen + (path.resolve(),)), values) if base else values


def _inherit(base: dict, override: dict) -> dict:
    """``override`` on top of its base preset. A preset that narrows ``image_codec.qualities`` (``[1]`` from
    tiny's ten) keeps the base's ``sizes`` only for the points it still offers; ``sizes`` it writes itself
    are checked as written (a width for a point it does not offer is an error). Likewise a preset that sets
    ``restorer.guidance`` or ``guidance_by_quality``, or another restorer ``kind`` or ``model``, replaces the
    base's guidance per rate point (tuned for the base's restorer): ``guidance: 3`` alone means 3 at every point."""
    merged = merge_dicts(base, override)
    restorer = override.get("restorer")
    if isinstance(restorer, dict) and {"guidance", "guidance_by_quality", "kind", "model"} & set(restorer) \
            and isinstance(merged.get("restorer"), dict):  # the guidance written here (or another model's) is all of it
        merged["restorer"]["guidance_by_quality"] = restorer.get("guidance_by_quality", {})
    own = override.get("image_codec")
    if not isinstance(own, dict) or not isinstance(merged.get("image_codec"), dict):
        return merged
    qualities = merged["image_codec"].get("qualities")
    inherited = (base.get("image_codec") or {}).get("sizes")
    if not isinstance(qualities, list) or not isinstance(inherited, dict) or not isinstance(own.get("sizes", {}), dict):
        return merged  # load_config reports bad qualities or sizes
    kept = {q: v for q, v in inherited.items() if q in qualities}  # the base's widths of the points still offered
    written = {q: {**(kept.get(q) if isinstance(kept.get(q), dict) else {}), **v} if isinstance(v, dict) else v
               for q, v in own.get("sizes", {}).items()}  # merged into the base's width of the same point
    merged["image_codec"]["sizes"] = {**kept, **written}  # load_config checks what is written as written
    return merged


def load_config(name_or_path: str = "tiny") -> Config:
    """The :class:`Config` of a preset name or a user YAML path (optionally ``base: PRESET`` plus overrides)."""
    cfg = build_dataclass(Config, _raw(str(name_or_path)), str(name_or_path))
    ic = cfg.image_codec
    if str(name_or_path) not in PRESETS and cfg.name in PRESETS:
        raise ConfigError(f"{name_or_path}: a user preset may not be named {cfg.name!r} like a built-in one; rename it")
    if not isinstance(ic.qualities, list) or not all(isinstance(q, int) and 0 <= q < 256 for q in ic.qualities):
        raise ConfigError(f"{cfg.name}: image_codec.qualities must be a list of integers 0-255, got {ic.qualities!r}")
    if not isinstance(ic.sizes, dict):
        raise ConfigError(f"{cfg.name}: image_codec.sizes maps rate points to {{N: int, M: int}}, got {ic.sizes!r}")
    for q, own in ic.sizes.items():
        if q not in ic.qualities or not isinstance(own, dict) or set(own) - {"N", "M"} or not all(
                isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in own.values()):
            raise ConfigError(f"{cfg.name}: image_codec.sizes maps an offered rate point ({ic.qualities}) to "
                              f"{{N: int, M: int}}, got {q!r}: {own!r}")
        if ic.size(q)[0] is None:
            raise ConfigError(f"{cfg.name}: image_codec.sizes for rate point {q} needs N (here or in image_codec.N)")
    if not isinstance(ic.pretrained, bool):
        raise ConfigError(f"{cfg.name}: image_codec.pretrained must be true or false, got {ic.pretrained!r}")
    if ic.variant != "base":
        weights, qualities = ic.variant_weights()
        make = ic.variants[ic.variant].get("make")
        missing = [q for q in qualities if make and weights and not resolve_path(weights.format(quality=q)).is_file()]
        if missing:
            raise ConfigError(f"{cfg.name}: LIC variant {ic.variant} has no weights for rate points {missing} yet "
                              f"(it does not ship); make them with: "
                              + "; ".join(make.format(quality=q) for q in missing))
        ic.weights, ic.qualities = weights, list(qualities)
        if ic.quality not in ic.qualities:
            ic.quality = ic.qualities[0]
    if ic.quality not in ic.qualities:
        raise ConfigError(f"{cfg.name}: image_codec.quality {ic.quality} not in qualities {ic.qualities}")
    if ic.metric not in ("mse", "ms-ssim"):
        raise ConfigError(f"{cfg.name}: image_codec.metric {ic.metric!r}; valid: mse, ms-ssim")
    cap = cfg.caption
    if cap.method not in CHOICES:
        raise ConfigError(f"{cfg.name}: caption.method {cap.method!r}; valid: {', '.join(CHOICES)}")
    if cap.method in LM_METHODS and not cap.lmm:
        raise ConfigError(f"{cfg.name}: caption.method {cap.method} needs caption.lmm")
    if not isinstance(cap.max_new_tokens, int) or cap.max_new_tokens < 1:
        raise ConfigError(f"{cfg.name}: caption.max_new_tokens must be a positive integer")
    if cap.lmm and not (cap.prompt or cap.question):
        raise ConfigError(f"{cfg.name}: caption needs a prompt or a question for the LMM")
    _check_selection(cfg.name, cap)
    _check_restorer(cfg)
    if cfg.domain is not None and cfg.domain not in DOMAINS:
        raise ConfigError(f"{cfg.name}: domain {cfg.domain!r}; valid: {', '.join(DOMAINS)} or null")
    return cfg


def _check_selection(name: str, cap: CaptionConfig) -> None:
    """Validate the caption-generation guard and the selection keys of ``cap``."""
    if cap.select not in SELECT_MODES:
        raise ConfigError(f"{name}: caption.select {cap.select!r}; valid: {', '.join(SELECT_MODES)}")
    if cap.select != "greedy" and not (cap.rank_clip or cap.clip):
        raise ConfigError(f"{name}: caption.select {cap.select} needs caption.clip or caption.rank_clip "
                          "(a CLIP model)")
    if not isinstance(cap.candidates, int) or isinstance(cap.candidates, bool) or cap.candidates < 1:
        raise ConfigError(f"{name}: caption.candidates must be a positive integer, got {cap.candidates!r}")
    for key in ("no_adjacent_repeat", "no_repeat_ngram_size"):
        value = getattr(cap, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{name}: caption.{key} must be an integer >= 0 (0: off), got {value!r}")
    for key in ("repetition_penalty", "clip_margin", "rank_lm_weight"):
        value = getattr(cap, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != value:
            raise ConfigError(f"{name}: caption.{key} must be a number >= 0, got {value!r}")
    if cap.repetition_penalty == 0:
        raise ConfigError(f"{name}: caption.repetition_penalty must be > 0 (1.0: off)")


def _check_restorer(cfg: Config) -> None:
    r = cfg.restorer
    if r.kind is not None and r.kind not in RESTORER_KINDS:
        raise ConfigError(f"{cfg.name}: restorer.kind {r.kind!r}; valid: {', '.join(RESTORER_KINDS)} or null")
    if r.kind and not r.model:
        raise ConfigError(f"{cfg.name}: restorer.kind {r.kind} needs restorer.model")
    if not isinstance(r.steps, int) or isinstance(r.steps, bool) or r.steps < 1:
        raise ConfigError(f"{cfg.name}: restorer.steps must be a positive integer, got {r.steps!r}")
    if not isinstance(r.colour_fix, bool):
        raise ConfigError(f"{cfg.name}: restorer.colour_fix must be true or false, got {r.colour_fix!r}")
    for key in ("strength", "guidance", "controlnet_scale"):
        value = getattr(r, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"{cfg.name}: restorer.{key} must be a number >= 0, got {value!r}")
    by_quality = r.guidance_by_quality
    if not isinstance(by_quality, dict) or not all(
            isinstance(q, int) and not isinstance(q, bool) and isinstance(g, (int, float)) and not isinstance(g, bool)
            and g >= 0 for q, g in by_quality.items()):
        raise ConfigError(f"{cfg.name}: restorer.guidance_by_quality maps rate points to guidance numbers >= 0, "
                          f"got {by_quality!r}")


def resolve_model(ref: str) -> str:
    """A model reference as ``from_pretrained`` wants it: a local folder (absolute or under the data dir) or a hub id."""
    path = Path(ref).expanduser()
    if path.is_absolute():
        return str(path)
    local = data_dir() / path
    return str(local) if local.exists() or ref.startswith("tiny/") else ref
