import numpy as np
import pytest
import torch
from PIL import Image

from itc_core import bitstream
from itc_core.codec import ImageTextCodec, describe
from itc_core.data import image_to_tensor
from itc_core.errors import ConfigError
from itc_core.metrics import psnr
from itc_core.tinyworld import sample
from tests.conftest import random_lic_preset


@pytest.fixture(scope="module")
def tiny():
    return ImageTextCodec.from_preset("tiny")


def test_decode_gives_exactly_the_encoders_reconstruction(tiny):
    image, _ = sample(2_000_001)
    for quality in tiny.config.image_codec.qualities:
        result = tiny.encode(image, quality, caption=False)
        decoded = tiny.decode(result.data)
        assert decoded.reconstruction.tobytes() == result.reconstruction.tobytes()
        assert (decoded.file.width, decoded.file.height, decoded.file.quality) == (64, 64, quality)


def test_higher_quality_costs_more_and_looks_better(tiny):
    """On average over a few scenes: the rate points are separate models, and the top three lie within 0.07 bpp
    of each other, so one scene may cost a few bytes more at q7 than at q8."""
    sizes, quality = [], []
    for seed in (2_000_002, 2_000_003, 2_000_005, 2_000_006):
        image = sample(seed)[0]
        results = [tiny.encode(image, q, caption=False) for q in tiny.config.image_codec.qualities]
        sizes.append([len(r.data) for r in results])
        quality.append([psnr(image_to_tensor(image), image_to_tensor(r.reconstruction)) for r in results])
    sizes, quality = np.mean(sizes, 0).tolist(), np.mean(quality, 0)
    assert sizes == sorted(sizes) and quality[-1] > quality[0] + 3


def test_describe_splits_the_bits(tiny):
    result = tiny.encode(sample(2_000_003)[0], caption=False)
    decoded = tiny.decode(result.data)
    info = describe(result.data, decoded)
    assert info["bytes_total"] == len(result.data) == info["bytes_header"] + info["bytes_payload"] + 2
    assert info["bytes_overhead"] == 9 and info["bits"]["caption"] == 0 and info["caption"] is None
    assert sum(info["bits"].values()) == pytest.approx(8 * len(result.data))
    assert info["bits"] == pytest.approx(result.bits) and info["check_verified"]
    assert info["bpp_total"] == pytest.approx(8 * len(result.data) / 4096)
    assert info["bits"]["z"] > 0 and info["bits"]["y"] > 0 and abs(info["bits"]["termination"]) < 40


def test_real_bits_track_the_models_estimate(tiny):
    for seed in (2_000_006, 2_000_007):
        image = sample(seed)[0]
        for quality in tiny.config.image_codec.qualities:
            result = tiny.encode(image, quality, caption=False)
            estimate = sum(tiny.image_codec(quality).estimate_bits(image_to_tensor(image)))
            payload = 8 * (len(result.data) - 9)
            assert payload <= 1.02 * estimate + 16 + 8, (quality, payload, estimate)


def test_odd_modes_and_sizes_encode(tiny):
    for image in (Image.new("RGBA", (1, 1), (1, 2, 3, 4)), Image.new("L", (65, 17), 128)):
        result = tiny.encode(image, caption=False)
        assert result.notes and tiny.decode(result.data).image.size == image.size


def test_target_bpp_picks_the_best_quality_that_fits(tiny):
    image = sample(2_000_004)[0]
    sizes = {q: tiny.encode(image, q, caption=False).bpp for q in tiny.config.image_codec.qualities}
    assert tiny.encode_at_bpp(image, sizes[2] + 1e-9, caption=False).quality == 2
    assert tiny.encode_at_bpp(image, 1e9, caption=False).quality == max(sizes)
    with pytest.raises(ConfigError, match="reaches"):
        tiny.encode_at_bpp(image, sizes[1] / 2, caption=False)


def test_other_weights_are_refused_not_decoded(tmp_path):
    path_a = random_lic_preset(tmp_path, seed=0, name="a")
    path_b = random_lic_preset(tmp_path, seed=1, name="b")
    data = ImageTextCodec.from_preset(path_a).encode(sample(0)[0], caption=False).data
    with pytest.raises(bitstream.ModelMismatch, match="encoded with other weights"):
        ImageTextCodec.from_preset(path_b).decode(data)


def test_other_preset_is_refused(tiny, random_preset):
    data = ImageTextCodec.from_preset(random_preset).encode(sample(0)[0], caption=False).data
    with pytest.raises(bitstream.ModelMismatch, match="preset 'custom'"):
        tiny.decode(data)


def test_decode_is_deterministic_in_process(tiny):
    data = tiny.encode(sample(2_000_005)[0], caption=False).data
    torch.set_num_threads(2)
    try:
        first = tiny.decode(data, restore=False).reconstruction.tobytes()
    finally:
        torch.set_num_threads(1)
    assert tiny.decode(data, restore=False).reconstruction.tobytes() == first


def test_damaged_payloads_are_clean_errors(tiny):
    data = tiny.encode(sample(2_000_008)[0], caption=False).data
    for i in range(7, len(data)):
        for bit in (0x01, 0x80):
            bad = bytearray(data)
            bad[i] ^= bit
            with pytest.raises(bitstream.BitstreamError):
                tiny.decode(bytes(bad))
    with pytest.raises(bitstream.CorruptedFile):
        tiny.decode(data[:-3] + data[-2:])  # a payload byte short


def test_forged_huge_size_is_refused_before_decoding(tiny):
    f = bitstream.unpack(tiny.encode(sample(2_000_009)[0], caption=False).data)
    f.width = f.height = 4096
    with pytest.raises(bitstream.CorruptedFile, match="needs at least"):
        tiny.decode(bitstream.pack(f))


def test_the_package_exports_the_codec_without_importing_torch():
    """``from itc_core import ImageTextCodec`` (the README's API) works; ``import itc_core`` alone stays light."""
    import subprocess
    import sys

    code = ("import sys, itc_core; assert 'torch' not in sys.modules; "
            "from itc_core import ImageTextCodec; from itc_core.codec import ImageTextCodec as C; assert ImageTextCodec is C")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_codec_path_imports_no_training_code():
    """Every module ``encode``/``decode`` loads (the LIC, the LMM, the restorer, the domain check) imports no
    trainer, loss or recipe: a user who only codes never pays for, or depends on, training code."""
    import subprocess
    import sys

    code = ("import sys; import itc_core.codec, itc_core.captioner, itc_core.caption_codec, itc_core.image_codec, "
            "itc_core.restorer, itc_core.domain, itc_core.cli; "
            "bad = [m for m in sys.modules if m.startswith('itc_core') and "
            "any(k in m for k in ('train', 'finetune', 'losses'))]; sys.exit(f'imported {bad}' if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
