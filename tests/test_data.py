import numpy as np
import pytest
from PIL import Image

from itc_core.data import image_to_tensor, load_image, tensor_to_image
from itc_core.errors import ImageReadError


def save(tmp_path, image, name="in.png"):
    path = tmp_path / name
    image.save(path)
    return path


@pytest.mark.parametrize("mode, note", [
    ("RGBA", "dropped the alpha channel"), ("LA", "dropped the alpha channel"), ("L", "grayscale"),
    ("1", "grayscale"), ("P", "palette"),
])
def test_modes_become_rgb_with_a_note(tmp_path, mode, note):
    image = Image.new("RGB", (7, 5), (200, 30, 60)).convert(mode)
    loaded, notes = load_image(save(tmp_path, image))
    assert loaded.mode == "RGB" and loaded.size == (7, 5)
    assert any(note in n for n in notes)


def test_rgb_needs_no_note(tmp_path):
    loaded, notes = load_image(save(tmp_path, Image.new("RGB", (3, 3), (1, 2, 3))))
    assert notes == [] and loaded.getpixel((0, 0)) == (1, 2, 3)


def test_transparent_pixels_composite_on_white(tmp_path):
    image = Image.new("RGBA", (2, 2), (255, 0, 0, 0))
    loaded, _ = load_image(save(tmp_path, image))
    assert loaded.getpixel((0, 0)) == (255, 255, 255)


def test_16_bit_png_scales_to_8_bit(tmp_path):
    array = np.array([[0, 32768, 65535]], dtype=np.uint16)
    loaded, notes = load_image(save(tmp_path, Image.fromarray(array)))
    assert [loaded.getpixel((i, 0))[0] for i in range(3)] == [0, 128, 255]
    assert any("16-bit" in n for n in notes)


def test_cmyk_jpeg(tmp_path):
    loaded, notes = load_image(save(tmp_path, Image.new("CMYK", (4, 4), (0, 255, 255, 0)), "in.jpg"))
    assert loaded.mode == "RGB" and any("CMYK" in n for n in notes)


def test_not_an_image_and_missing_file(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("hello, I am not a picture")
    with pytest.raises(ImageReadError, match="notes.png: not a readable image"):
        load_image(text)
    with pytest.raises(ImageReadError, match="no such file"):
        load_image(tmp_path / "missing.png")


def test_truncated_png(tmp_path):
    path = save(tmp_path, Image.new("RGB", (64, 64), (9, 9, 9)))
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(ImageReadError, match="not a readable image"):
        load_image(path)


def test_tensor_round_trip_is_exact():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (5, 9, 3), dtype=np.uint8))
    x = image_to_tensor(image)
    assert x.shape == (1, 3, 5, 9) and 0 <= x.min() and x.max() <= 1
    assert np.array_equal(np.asarray(tensor_to_image(x)), np.asarray(image))
