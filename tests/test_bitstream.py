import zlib

import pytest

from itc_core import bitstream as B


def make(with_text: bool = False, **kw) -> B.ItcFile:
    fields = dict(width=64, height=64, preset="tiny", quality=1, lic_fingerprint=bytes.fromhex("a1b2c3"),
                  image_strings=[b"\x01" * 17, b"\x02" * 8])
    if with_text:
        fields.update(text_method=5, text=b"\x05\x06\x07", caption_crc=zlib.crc32(b"a red circle"))
    fields.update(kw)
    return B.ItcFile(**fields)


@pytest.mark.parametrize("text", [False, True])
def test_round_trip(text):
    f = make(text)
    assert B.unpack(B.pack(f)) == f


def test_large_and_odd_sizes_round_trip():
    f = make(width=1, height=65536, image_strings=[b"x" * 300, b"", b"z"], preset="custom", quality=255)
    assert B.unpack(B.pack(f)) == f


def test_overhead_of_a_tiny_scene_is_18_bytes():
    f = make()
    assert B.overhead_bytes(f) == 18  # 14 header + 4 image section (two 1-byte lengths, CRC-16)
    assert B.overhead_bytes(make(with_text=True)) == 18 + 4 + 1 + 2  # caption CRC-32, text length, text CRC-16


@pytest.mark.parametrize("data", [b"", b"IT", b"PNG\x89", b"\x89PNG\r\n\x1a\n" + bytes(40)])
def test_not_an_itc_file(data):
    with pytest.raises(B.NotAnItcFile, match="not an .itc file"):
        B.unpack(data)


def test_unsupported_version():
    data = bytearray(B.pack(make()))
    data[3] = 9
    with pytest.raises(B.UnsupportedVersion, match="version 9"):
        B.unpack(bytes(data))


@pytest.mark.parametrize("text", [False, True])
def test_every_truncation_is_reported(text):
    data = B.pack(make(text))
    for n in range(4, len(data)):
        with pytest.raises(B.TruncatedFile, match="file ends inside"):
            B.unpack(data[:n])


@pytest.mark.parametrize("text", [False, True])
def test_every_flipped_byte_is_caught(text):
    data = B.pack(make(text))
    for i in range(len(data)):
        for bit in (0x01, 0x80):
            bad = bytearray(data)
            bad[i] ^= bit
            with pytest.raises(B.BitstreamError):
                B.unpack(bytes(bad))


def test_flipped_payload_byte_is_a_crc_mismatch():
    data = bytearray(B.pack(make(with_text=True)))
    image_byte = 14 + 4 + 1 + 3  # inside the first image string
    data[image_byte] ^= 0xFF
    with pytest.raises(B.CorruptedFile, match="image section CRC mismatch"):
        B.unpack(bytes(data))
    data[image_byte] ^= 0xFF
    data[-3] ^= 0xFF  # last byte of the text payload
    with pytest.raises(B.CorruptedFile, match="text section CRC mismatch"):
        B.unpack(bytes(data))


def test_trailing_bytes_are_an_error():
    with pytest.raises(B.CorruptedFile, match="unexpected bytes"):
        B.unpack(B.pack(make()) + b"\x00")


def test_pack_refuses_inconsistent_fields():
    with pytest.raises(ValueError, match="1-3 image strings"):
        B.pack(make(image_strings=[]))
    with pytest.raises(ValueError, match="caption CRC"):
        B.pack(make(text_method=5, text=b"x"))
    with pytest.raises(ValueError, match="unknown preset"):
        B.pack(make(preset="huge"))


def test_impossible_sizes_are_refused():
    with pytest.raises(ValueError, match="sides of 1-65536"):
        B.pack(make(width=70000))
    data = bytearray(B.pack(make()))
    data[4:5] = B._varint(70000)  # a huge width with a valid header CRC
    header_end = len(data) - len(B.pack(make())) + 14
    fixed = bytes(data[:header_end - 2]) + B._crc16(bytes(data[:header_end - 2])) + bytes(data[header_end:])
    with pytest.raises(B.CorruptedFile, match="impossible values"):
        B.unpack(fixed)
