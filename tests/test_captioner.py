import csv
from pathlib import Path

import pytest
from PIL import Image

from itc_core.captioner import CsvCaptions, caption_image, load_lmm
from itc_core.config import CaptionConfig
from itc_core.errors import ItcError, WeightsError
from tests.conftest import tiny_random_lmm

KODAK = Path(__file__).resolve().parents[1] / "data" / "reference" / "kodak_llava_1.5.csv"
PROMPT = "USER: <image>\nDescribe the scene. ASSISTANT:"


@pytest.mark.parametrize("kind", ["llava", "llava-next"])
def test_captions_come_from_any_vlm_class_through_one_path(tmp_path, kind):
    path = tiny_random_lmm(tmp_path, kind=kind)
    lm = load_lmm(CaptionConfig(lmm=str(path), prompt=PROMPT, max_new_tokens=6))
    assert type(lm.model).__name__ == {"llava": "LlavaForConditionalGeneration",
                                       "llava-next": "LlavaNextForConditionalGeneration"}[kind]
    image = Image.new("RGB", (40, 24), (200, 20, 20))
    text = caption_image(lm, image, max_new_tokens=6)
    assert isinstance(text, str) and text == caption_image(lm, image, max_new_tokens=6)  # greedy: deterministic


def test_missing_lmm_says_where_to_get_it(tmp_path):
    with pytest.raises(WeightsError, match="itc tiny-zoo --only lmm"):
        load_lmm(CaptionConfig(lmm="tiny/not-trained-yet", prompt=PROMPT))


@pytest.mark.skipif(not KODAK.exists(), reason="shared/data not beside the checkout")
def test_paper_csv_captions_are_byte_exact():
    captions = CsvCaptions(KODAK)
    assert len(captions) == 24
    with KODAK.open(newline="", encoding="utf-8") as f:
        rows = {r["image_name"]: r["overall_description"] for r in csv.DictReader(f)}
    assert captions["kodim05.png"] == rows["kodim05.png"] and captions["kodim05.png"].startswith(" The image")
    assert captions["/some/dir/kodim22.png"] == rows["kodim22.png"] and captions["kodim22"] == rows["kodim22.png"]
    with pytest.raises(KeyError, match="kodim99"):
        captions["kodim99.png"]


def test_generic_csv_and_bad_csv(tmp_path):
    good = tmp_path / "c.csv"
    good.write_text("file,caption\na.png,\" two  spaces \"\n", encoding="utf-8")
    assert CsvCaptions(good)["a.png"] == " two  spaces "
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n1,2\n")
    with pytest.raises(ItcError, match="needs a name column"):
        CsvCaptions(bad)
