"""The ``.itc`` container: everything the decoder needs besides the model weights (DESIGN §4).

Layout, version 1 (varint = unsigned LEB128; crc16 = CRC-CCITT, ``binascii.crc_hqx``)::

    header   "ITC" | version u8 | width varint | height varint | preset u8 | quality u8
             | layout u8 (bits 0-1: number of image strings, 1-3; bits 2-5: text method, 0 = none;
                          bits 6-7: reserved, 0)
             | LIC fingerprint (3 bytes) | [caption CRC-32 u32, only when a text section follows]
             | crc16 of all of the above
    image    for each string: length varint | bytes;  then crc16 of the section
    text     (only when text method != 0) length varint | bytes | crc16 of the section
             (the bytes: for LM methods the first 2 bytes of the LMM's fingerprint, then the coded caption;
              the caption CRC-32 in the header checks the *decoded* caption, e.g. against a platform whose
              LMM arithmetic differs from the encoder's)

A 64×64 image with a hyperprior LIC (two strings under 128 bytes each) costs
18 bytes beyond its entropy-coded payload: 14 of header (4 magic+version,
1+1 size, 1 preset, 1 quality, 1 layout, 3 fingerprint, 2 CRC) and 4 of
image section (two 1-byte lengths, 2 CRC). A caption adds 4 (CRC-32) + 1 (length) + 2 (CRC)
+ 2 (LMM fingerprint, LM methods only) = 9 bytes. Every way a file can be wrong has its own
exception, all subclasses of :class:`BitstreamError`.
"""

from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass, field

from .errors import ItcError

__all__ = [
    "MAGIC", "VERSION", "PRESET_CODES", "ItcFile", "pack", "unpack", "overhead_bytes",
    "BitstreamError", "NotAnItcFile", "UnsupportedVersion", "TruncatedFile", "CorruptedFile", "ModelMismatch",
]

MAGIC = b"ITC"
VERSION = 1
FINGERPRINT_BYTES = 3
MAX_SIDE = 1 << 16  # larger images are refused rather than allocated
PRESET_CODES = {"custom": 0, "tiny": 1, "laptop": 2, "paper": 3}


class BitstreamError(ItcError):
    """Base of every ``.itc`` reading error."""


class NotAnItcFile(BitstreamError):
    """The data does not start with the ``ITC`` magic."""


class UnsupportedVersion(BitstreamError):
    """The file's format version is not one this code reads."""


class TruncatedFile(BitstreamError):
    """The data ends before its last section does."""


class CorruptedFile(BitstreamError):
    """A CRC does not match or a field holds an impossible value."""


class ModelMismatch(BitstreamError):
    """The file was encoded with other weights than the ones loaded to decode it."""


@dataclass
class ItcFile:
    """The decoded fields of an ``.itc`` file.

    Attributes:
        width, height: image size in pixels (unpadded).
        preset: preset name (``custom`` for a user YAML).
        quality: LIC rate point.
        lic_fingerprint: the first bytes of the LIC weights' SHA-256.
        image_strings: the LIC's entropy-coded latents.
        text_method: code of the caption coding method, 0 when no caption is stored.
        text: the coded caption (empty when ``text_method`` is 0).
        caption_crc: CRC-32 of the caption's UTF-8 bytes, checked after decoding the text.
    """

    width: int
    height: int
    preset: str
    quality: int
    lic_fingerprint: bytes
    image_strings: list[bytes]
    text_method: int = 0
    text: bytes = b""
    caption_crc: int | None = None
    section_bytes: dict[str, int] = field(default_factory=dict, compare=False)


def _varint(n: int) -> bytes:
    if n < 0:
        raise ValueError(f"varint of a negative number {n}")
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _crc16(data: bytes) -> bytes:
    return struct.pack(">H", binascii.crc_hqx(data, 0xFFFF))


def pack(f: ItcFile) -> bytes:
    """Serialise ``f``; the inverse of :func:`unpack`."""
    if not 1 <= len(f.image_strings) <= 3:
        raise ValueError(f"an .itc file holds 1-3 image strings, got {len(f.image_strings)}")
    if not 0 <= f.text_method < 16:
        raise ValueError(f"text method code {f.text_method} out of range 0-15")
    if (f.text_method != 0) != (f.caption_crc is not None):
        raise ValueError("a text section needs a caption CRC, and only a text section has one")
    if len(f.lic_fingerprint) < FINGERPRINT_BYTES or not (0 < f.width <= MAX_SIDE and 0 < f.height <= MAX_SIDE):
        raise ValueError(f"fingerprint of {FINGERPRINT_BYTES} bytes and sides of 1-{MAX_SIDE} px needed")
    if not 0 <= f.quality < 256:
        raise ValueError(f"quality {f.quality} does not fit one byte")
    if f.preset not in PRESET_CODES:
        raise ValueError(f"unknown preset {f.preset!r}; valid: {', '.join(PRESET_CODES)}")
    header = bytearray(MAGIC + bytes([VERSION]))
    header += _varint(f.width) + _varint(f.height)
    header += bytes([PRESET_CODES[f.preset], f.quality, len(f.image_strings) | f.text_method << 2])
    header += f.lic_fingerprint[:FINGERPRINT_BYTES]
    if f.caption_crc is not None:
        header += struct.pack(">I", f.caption_crc)
    header += _crc16(bytes(header))
    image = b"".join(_varint(len(s)) + s for s in f.image_strings)
    out = bytes(header) + image + _crc16(image)
    if f.text_method:
        text = _varint(len(f.text)) + f.text
        out += text + _crc16(text)
    return out


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise TruncatedFile(f"file ends inside the {what} (at byte {len(self.data)}, needs {self.pos + n})")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def varint(self, what: str) -> int:
        value = shift = 0
        while True:
            byte = self.take(1, what)[0]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
            if shift > 63:
                raise CorruptedFile(f"{what}: varint too long")

    def check_crc(self, start: int, what: str) -> None:
        expected = self.take(2, f"{what} CRC")
        if _crc16(self.data[start:self.pos - 2]) != expected:
            raise CorruptedFile(f"{what} CRC mismatch: the file is corrupted")


def unpack(data: bytes) -> ItcFile:
    """Parse an ``.itc`` file, checking magic, version, lengths and every CRC."""
    r = _Reader(bytes(data))
    if r.data[:len(MAGIC)] != MAGIC:
        raise NotAnItcFile("not an .itc file (no 'ITC' magic at the start)")
    r.pos = len(MAGIC)
    version = r.take(1, "header")[0]
    if version != VERSION:
        raise UnsupportedVersion(f".itc format version {version}; this itc reads version {VERSION} (upgrade itc?)")
    width, height = r.varint("header"), r.varint("header")
    preset_code, quality, layout = r.take(3, "header")
    fingerprint = r.take(FINGERPRINT_BYTES, "header")
    n_strings, text_method = layout & 0x3, (layout >> 2) & 0xF
    caption_crc = struct.unpack(">I", r.take(4, "header"))[0] if text_method else None
    r.check_crc(0, "header")
    presets = {code: name for name, code in PRESET_CODES.items()}
    if (layout >> 6 or n_strings == 0 or preset_code not in presets or not 0 < width <= MAX_SIDE
            or not 0 < height <= MAX_SIDE):
        raise CorruptedFile("header holds impossible values (reserved bits, preset or size)")
    header_end = r.pos
    strings = [r.take(r.varint("image section"), "image section") for _ in range(n_strings)]
    r.check_crc(header_end, "image section")
    image_end = r.pos
    text = b""
    if text_method:
        text = r.take(r.varint("text section"), "text section")
        r.check_crc(image_end, "text section")
    if r.pos != len(data):
        raise CorruptedFile(f"{len(data) - r.pos} unexpected bytes after the last section")
    sizes = {"header": header_end, "image": image_end - header_end, "text": r.pos - image_end}
    return ItcFile(width, height, presets[preset_code], quality, fingerprint, strings,
                   text_method, text, caption_crc, sizes)


def overhead_bytes(f: ItcFile) -> int:
    """Bytes of ``pack(f)`` that are not entropy-coded payload (header, lengths, CRCs)."""
    return len(pack(f)) - sum(map(len, f.image_strings)) - len(f.text)
