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
    image, _ = sample(2_000_002)
    x = image_to_tensor(image)
    results = [tiny.encode(image, q, caption=False) for q in tiny.config.image_codec.qualities]
    sizes = [len(r.data) for r in results]
    quality = [psnr(x, image_to_tensor(r.reconstruction)) for r in results]
    assert sizes == sorted(sizes) and quality[-1] > quality[0] + 3


def test_describe_splits_the_bytes(tiny):
    result = tiny.encode(sample(2_000_003)[0], caption=False)
    info = describe(result.data)
    assert info["bytes_total"] == len(result.data) == info["bytes_image"] + info["bytes_text"] + info["bytes_overhead"]
    assert info["bytes_overhead"] == 18 and info["bytes_text"] == 0 and info["caption"] is None
    assert info["bpp_total"] == pytest.approx(8 * len(result.data) / 4096)
    assert info["models"]["lic"] == tiny.image_codec(1).fingerprint[:6]


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
    with pytest.raises(bitstream.ModelMismatch, match="encoded with LIC weights"):
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
