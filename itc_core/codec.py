"""``ImageTextCodec``: the one place that wires the stages together.

LMM-driven semantic image-text coding (Murai, Sun & Katto, VCIP 2024,
arXiv 2411.13033)::

    image ──► LIC encoder ──► image bytes ──┐
                                            ├──► .itc file ──► LIC decoder ──► reconstruction
    (caption ──► caption coder ──► text bytes: arrives with the caption stage)

    codec = ImageTextCodec.from_preset("tiny")
    result = codec.encode(image)            # PIL image, any mode and size
    decoded = codec.decode(result.data)     # bit-identical reconstruction, header fields
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from PIL import Image

from . import bitstream
from .config import PRESETS, Config, load_config
from .data import image_to_tensor, tensor_to_image, to_rgb
from .errors import ConfigError
from .image_codec import ImageCodec, LicPayload

__all__ = ["ImageTextCodec", "EncodeResult", "DecodeResult", "describe"]


@dataclass
class EncodeResult:
    """What ``encode`` made: the file's bytes, the reconstruction both sides see, and the LIC payload."""

    data: bytes
    reconstruction: Image.Image
    payload: LicPayload
    quality: int
    notes: list[str] = field(default_factory=list)

    @property
    def bpp(self) -> float:
        """All bits of the file (container included) per pixel."""
        return 8 * len(self.data) / (self.payload.width * self.payload.height)


@dataclass
class DecodeResult:
    """What ``decode`` made: the reconstruction and the file's fields."""

    image: Image.Image
    file: bitstream.ItcFile


def describe(data: bytes) -> dict:
    """Sizes, bpp split and model fields of an ``.itc`` file, as ``itc inspect --json`` prints them."""
    f = bitstream.unpack(data)
    pixels = f.width * f.height
    image_bytes = sum(map(len, f.image_strings))
    text_bytes = len(f.text)
    return {
        "width": f.width,
        "height": f.height,
        "preset": f.preset,
        "quality": f.quality,
        "bytes_total": len(data),
        "bytes_image": image_bytes,
        "bytes_text": text_bytes,
        "bytes_overhead": len(data) - image_bytes - text_bytes,
        "bytes_per_string": [len(s) for s in f.image_strings],
        "bpp_total": 8 * len(data) / pixels,
        "bpp_payload": 8 * (image_bytes + text_bytes) / pixels,
        "bpp_image": 8 * image_bytes / pixels,
        "bpp_text": 8 * text_bytes / pixels,
        "caption": None,
        "text_method": f.text_method or None,
        "models": {"lic": f.lic_fingerprint.hex()},
    }


class ImageTextCodec:
    """A preset's models, loaded lazily per LIC quality, with ``encode``/``decode`` to and from ``.itc`` bytes."""

    def __init__(self, config: Config):
        self.config = config
        self._image_codecs: dict[int, ImageCodec] = {}

    @classmethod
    def from_preset(cls, preset: str = "tiny") -> "ImageTextCodec":
        """The codec of a preset name (``tiny``, ``laptop``, ``paper``) or a user YAML path."""
        return cls(load_config(preset))

    @property
    def preset_code_name(self) -> str:
        """The preset as stored in a file: its name, or ``custom`` for a user YAML."""
        return self.config.name if self.config.name in PRESETS else "custom"

    def image_codec(self, quality: int | None = None) -> ImageCodec:
        """The LIC at ``quality`` (default: the preset's), loaded on first use."""
        quality = self.config.image_codec.quality if quality is None else quality
        if quality not in self._image_codecs:
            self._image_codecs[quality] = ImageCodec.from_config(self.config.image_codec, quality)
        return self._image_codecs[quality]

    def encode(self, image: Image.Image, quality: int | None = None) -> EncodeResult:
        """Code ``image`` (any PIL mode, any size) into ``.itc`` bytes.

        The encoder decodes its own strings, so ``reconstruction`` is exactly
        what ``decode`` will give.
        """
        image, notes = to_rgb(image)
        lic = self.image_codec(quality)
        payload = lic.compress(image_to_tensor(image))
        f = bitstream.ItcFile(
            width=payload.width, height=payload.height, preset=self.preset_code_name, quality=lic.quality,
            lic_fingerprint=bytes.fromhex(lic.fingerprint)[:bitstream.FINGERPRINT_BYTES],
            image_strings=payload.strings,
        )
        recon = lic.decompress(payload.strings, payload.height, payload.width)
        return EncodeResult(bitstream.pack(f), tensor_to_image(recon), payload, lic.quality, notes)

    def encode_at_bpp(self, image: Image.Image, target_bpp: float) -> EncodeResult:
        """The highest-quality encoding whose whole file fits ``target_bpp``; ValueError if none does."""
        best = None
        for quality in sorted(self.config.image_codec.qualities):
            result = self.encode(image, quality)
            if result.bpp > target_bpp:
                break
            best = result
        if best is None:
            raise ConfigError(f"no quality of preset {self.config.name} reaches {target_bpp} bpp "
                              f"(the lowest gives {result.bpp:.4f} bpp)")
        return best

    def decode(self, data: bytes) -> DecodeResult:
        """Rebuild the image from ``.itc`` bytes; raises a ``BitstreamError`` subclass for a bad or foreign file."""
        f = bitstream.unpack(data)
        if f.preset != self.preset_code_name:
            raise bitstream.ModelMismatch(
                f"file was encoded with preset {f.preset!r}, this codec is {self.preset_code_name!r}"
                + (" (pass the same --preset YAML)" if f.preset == "custom" else f" (use --preset {f.preset})"))
        if f.quality not in self.config.image_codec.qualities:
            raise bitstream.ModelMismatch(f"file uses LIC quality {f.quality}, not offered by preset {self.config.name}")
        lic = self.image_codec(f.quality)
        expected = bytes.fromhex(lic.fingerprint)[:bitstream.FINGERPRINT_BYTES]
        if f.lic_fingerprint != expected:
            raise bitstream.ModelMismatch(
                f"file was encoded with LIC weights {f.lic_fingerprint.hex()}, the loaded q{f.quality} weights "
                f"are {expected.hex()}: decode with the encoder's weights")
        if len(f.image_strings) != len(lic.latent_names):
            raise bitstream.CorruptedFile(f"image section holds {len(f.image_strings)} strings, "
                                          f"{lic.architecture} needs {len(lic.latent_names)}")
        with torch.no_grad():
            x_hat = lic.decompress(f.image_strings, f.height, f.width)
        return DecodeResult(tensor_to_image(x_hat), f)
