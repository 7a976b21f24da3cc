import subprocess
import sys

import pytest

from itc_core import bitstream as B


def make(**kw) -> B.ItcFile:
    fields = dict(width=64, height=64, preset="tiny", quality=1, text_method=None, fingerprint=0xA1,
                  payload=b"\x01" * 15, check=b"\x12\x34")
    fields.update(kw)
    f = B.ItcFile(**fields)
    f.header_bytes = len(B.header(f))
    return f


@pytest.mark.parametrize("kw", [{}, {"text_method": "lmm-ac"}, {"text_method": "utf8", "preset": "custom"},
                                {"width": 1, "height": 16384, "quality": 255, "payload": b""},
                                {"width": 4096, "height": 4096, "quality": 7, "preset": "paper"}])
def test_round_trip(kw):
    f = make(**kw)
    assert B.unpack(B.pack(f)) == f


def test_header_of_a_tiny_scene_is_7_bytes_and_the_check_2():
    assert make().header_bytes == 7  # IT, version, 1+1 size, fields, fingerprint
    assert make(text_method="lmm-ac").header_bytes == 7  # a caption costs no header byte
    assert make(quality=9).header_bytes == 8  # qualities >= 7 take a byte of their own
    assert make(width=768, height=512).header_bytes == 9
    assert len(B.pack(make())) == 7 + 15 + 2


def test_sizes_needs_no_model():
    code = ("import sys; from itc_core import bitstream; bitstream.sizes(bytes.fromhex(sys.argv[1])); "
            "bad = [m for m in ('torch', 'compressai', 'transformers', 'constriction') if m in sys.modules]; "
            "sys.exit(f'imported {bad}' if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code, B.pack(make()).hex()], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    info = B.sizes(B.pack(make(text_method="zlib")))
    assert info == {"version": 2, "width": 64, "height": 64, "preset": "tiny", "quality": 1, "text_method": "zlib",
                    "out_of_domain": False, "fingerprint": "a1", "bytes_header": 7, "bytes_payload": 15, "bytes_check": 2,
                    "bytes_total": 24, "bpp_total": 24 * 8 / 4096}


def test_an_out_of_domain_mark_round_trips_and_holds_no_caption():
    marked = B.unpack(B.pack(make(out_of_domain=True)))
    assert marked.out_of_domain and marked.text_method is None and marked.header_bytes == 7  # no byte more
    assert not B.unpack(B.pack(make())).out_of_domain
    with pytest.raises(ValueError, match="stores no caption"):
        B.header(make(out_of_domain=True, text_method="zlib"))


@pytest.mark.parametrize("data", [b"", b"I", b"PNG\x89", b"\x89PNG\r\n\x1a\n" + bytes(40)])
def test_not_an_itc_file(data):
    with pytest.raises(B.NotAnItcFile, match="not an .itc file"):
        B.unpack(data)


def test_version_1_gets_a_re_encode_error_and_others_an_upgrade_hint():
    with pytest.raises(B.UnsupportedVersion, match="version 1.*re-encode"):
        B.unpack(b"ITC\x01" + bytes(30))
    data = bytearray(B.pack(make()))
    data[2] = 9
    with pytest.raises(B.UnsupportedVersion, match="version 9"):
        B.unpack(bytes(data))


def test_every_header_truncation_is_reported():
    data = B.pack(make(payload=b""))
    for n in range(2, len(data)):
        with pytest.raises(B.TruncatedFile, match="file ends inside"):
            B.unpack(data[:n])


def test_impossible_fields_are_refused():
    with pytest.raises(ValueError, match="sides of 1-16384"):
        B.pack(make(width=20000))
    with pytest.raises(ValueError, match="at most 16777216 pixels"):
        B.pack(make(width=16384, height=2048))
    with pytest.raises(ValueError, match="unknown preset"):
        B.pack(make(preset="huge"))
    ok = B.pack(make())
    for forged, message in [(ok[:3] + B.varint(19999) * 2 + ok[5:], "20000x20000"),
                            (ok[:3] + b"\xff\xff\xff\x7f" + ok[4:], "size field too long"),
                            (ok[:5] + bytes([7 << 5]) + b"\x03" + ok[6:], "quality byte")]:
        with pytest.raises(B.CorruptedFile, match=message):
            B.unpack(forged)


def test_check_covers_models_body_caption_and_pixels():
    base = B.check_value(b"m", b"body", "a red circle", b"\x00\x01")
    for other in [(b"n", b"body", "a red circle", b"\x00\x01"), (b"m", b"bodz", "a red circle", b"\x00\x01"),
                  (b"m", b"body", "a red circlf", b"\x00\x01"), (b"m", b"body", "a red circle", b"\x00\x02"),
                  (b"m", b"body", None, b"\x00\x01")]:
        assert B.check_value(*other) != base
