import csv
from pathlib import Path

import pytest
from PIL import Image

from itc_core.captioner import CsvCaptions, caption_image, load_lmm
from itc_core.config import CaptionConfig
from itc_core.errors import ItcError, WeightsError
from itc_core.tinyworld import sample
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


# ---------------------------------------------------------------- repetition guard and caption selection

def tandem_repeat(items: list) -> list | None:
    """The first phrase (sub-list) that is immediately followed by itself in ``items``, or None."""
    for m in range(1, len(items) // 2 + 1):
        for i in range(len(items) - 2 * m + 1):
            if items[i:i + m] == items[i + m:i + 2 * m]:
                return items[i:i + m]
    return None


def test_no_adjacent_repeat_bans_exactly_the_token_that_would_repeat_a_phrase():
    import torch

    from itc_core.captioner import NoAdjacentRepeat

    guard = NoAdjacentRepeat(max_tokens=3, prompt_length=2)
    ids = torch.tensor([[9, 9, 5, 6, 5], [9, 9, 1, 2, 3]])  # after the 2-token prompt: "5 6 5" and "1 2 3"
    scores = guard(ids, torch.zeros(2, 10))
    assert torch.isinf(scores[0]).nonzero().flatten().tolist() == [5, 6]  # "5 5" and "5 6 5 6"
    assert torch.isinf(scores[1]).nonzero().flatten().tolist() == [3]  # only "3 3"; the prompt's "9 9" does not count


def test_guarded_generation_never_repeats_a_phrase_back_to_back(random_lmm_dir):
    """Token ids straight from ``generate`` (byte-level pieces of a random model need not re-tokenize the same)."""
    from itc_core.captioner import guard_processors

    lm = load_lmm(CaptionConfig(lmm=str(random_lmm_dir), prompt=PROMPT))
    inputs = lm.processor(images=sample(2_000_030)[0], text=lm.prompt, return_tensors="pt")
    start = inputs["input_ids"].shape[1]

    def generated(guard, **kwargs):
        out = lm.model.generate(**inputs, max_new_tokens=40, do_sample=False, pad_token_id=lm.eos,
                                logits_processor=guard_processors(guard, start), **kwargs)
        return [[t for t in row if t != lm.eos] for row in out[:, start:].tolist()]
    assert tandem_repeat(generated(None)[0]), "the random LMM should loop without the guard, or this test proves nothing"
    for ids in generated(40) + generated(40, num_beams=3, num_return_sequences=3):
        assert tandem_repeat(ids) is None, ids


@pytest.mark.parametrize("name", ["grace_hopper.jpg", "Minduka_Present_Blue_Pack.png"])
def test_out_of_world_images_get_a_caption_without_a_loop(name):
    """The shipped tiny LMM with the tiny preset's guard, on photos unlike any scene (it looped on Grace Hopper)."""
    import matplotlib.cbook as cbook
    from PIL import Image

    from itc_core.captioner import generation_kwargs
    from itc_core.config import load_config

    cfg = load_config("tiny").caption
    lm = load_lmm(cfg)
    text = caption_image(lm, Image.open(cbook.get_sample_data(name)), **generation_kwargs(cfg))
    assert text and tandem_repeat(text.split()) is None, text
    # Each word took at least one generated token. (Re-tokenising the text is no count of them: the caption is
    # stripped, and a first token " circle" comes back as "c", "ir", "cle".)
    assert len(text.split()) <= cfg.max_new_tokens


def test_pick_caption_rerank_and_rate_aware():
    import numpy as np

    from itc_core.captioner import pick_caption

    texts = ["a", "bb", "ccc", "dddd"]
    sims = np.array([0.90, 0.95, 0.945, 0.80])
    assert pick_caption(texts, sims, "rerank") == (1, None)
    best, bits = pick_caption(texts, sims, "rate-aware", margin=0.01, bits_of=lambda t: 8 * len(t))
    assert (best, bits) == (1, [None, 16, 24, None])  # "ccc" is inside the margin but costs more
    best, bits = pick_caption(texts, sims, "rate-aware", margin=0.2, bits_of=lambda t: 8 * len(t))
    assert best == 0 and bits == [8, 16, 24, 32]
    best, _ = pick_caption(texts, sims, "rate-aware", margin=0.2, bits_of=lambda t: 8)
    assert best == 1  # equal bits: the more similar caption


def tiny_random_clip(directory):
    """A tiny random CLIPModel with the tiny tokenizer and no image-processor config (like the shipped tiny CLIP)."""
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig

    from itc_core.tinyworld.tokenizer import train_tokenizer

    torch.manual_seed(0)
    tok = train_tokenizer(vocab_size=320, n_captions=300)
    text = CLIPTextConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                          num_attention_heads=2, max_position_embeddings=48, pad_token_id=tok.pad_token_id,
                          bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    vision = CLIPVisionConfig(image_size=32, patch_size=8, hidden_size=16, intermediate_size=32,
                              num_hidden_layers=1, num_attention_heads=2)
    model = CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=16))
    path = directory / "clip"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.mark.parametrize("mode", ["greedy", "rerank", "rate-aware"])
def test_select_caption_keeps_a_candidate_and_says_how(tmp_path, random_lmm_dir, mode):
    import numpy as np

    from itc_core.captioner import load_clip, select_caption

    lm = load_lmm(CaptionConfig(lmm=str(random_lmm_dir), prompt=PROMPT))
    clip = load_clip(str(tiny_random_clip(tmp_path)))
    image = sample(2_000_031)[0]
    choice = select_caption(lm, image, mode, 3, clip, reconstruction=image, margin=1.0, max_new_tokens=6)
    assert choice.text in choice.candidates and choice.mode == mode
    if mode == "greedy":
        assert choice.candidates == [caption_image(lm, image, max_new_tokens=6)] and choice.describe() == "greedy"
        return
    assert len(choice.candidates) == len(set(choice.candidates)) >= 1
    assert choice.describe() == f"{mode} of {len(choice.candidates)} candidates"
    sims = clip.similarity(image, choice.candidates)
    assert np.allclose(sims, choice.similarity) and np.all(np.abs(sims) <= 1 + 1e-6)
    if mode == "rerank":
        assert choice.text == choice.candidates[int(np.argmax(sims))]
    else:  # margin 1.0: every candidate is coded, the fewest bits win
        assert None not in choice.bits and choice.bits[choice.candidates.index(choice.text)] == min(choice.bits)


def test_ranking_weighs_the_lmm_belief_in_clip_units(tmp_path, random_lmm_dir):
    """Weight 0 ranks by CLIP alone; weight w adds w · ln p_LMM / logit scale, with ln p the sum of the
    coder's own next-token log-probabilities; a huge weight hands the choice to the LMM."""
    import numpy as np

    from itc_core.captioner import caption_candidates, load_clip, ranking_scores, select_caption

    lm = load_lmm(CaptionConfig(lmm=str(random_lmm_dir), prompt=PROMPT))
    clip = load_clip(str(tiny_random_clip(tmp_path)))
    image = sample(2_000_031)[0]
    texts = caption_candidates(lm, image, 3, max_new_tokens=6)
    sims, logp, score = ranking_scores(lm, clip, image, texts)
    assert logp is None and np.array_equal(score, sims)
    sims, logp, score = ranking_scores(lm, clip, image, texts, lm_weight=0.5)
    tokens = lm.tokenize(texts[0])
    by_hand = np.log(lm.distributions(image, tokens)[np.arange(len(tokens)), tokens]).sum()
    assert logp[0] == pytest.approx(by_hand) and np.all(logp < 0)
    assert np.allclose(score, sims + 0.5 * logp / clip.logit_scale)
    choice = select_caption(lm, image, "rerank", 3, clip, lm_weight=1e6, max_new_tokens=6)
    assert choice.text == texts[int(np.argmax(logp))] and choice.describe().endswith("(CLIP × LMM)")
    assert choice.log_likelihood == pytest.approx(logp.tolist()) and choice.score is not None


def test_selection_without_clip_is_a_clear_error(random_lmm_dir):
    from itc_core.captioner import load_clip, select_caption
    from itc_core.errors import ConfigError

    lm = load_lmm(CaptionConfig(lmm=str(random_lmm_dir), prompt=PROMPT))
    with pytest.raises(ConfigError, match="needs a CLIP"):
        select_caption(lm, sample(2_000_031)[0], "rerank", 2)
    with pytest.raises(ConfigError, match="no CLIP"):
        load_clip(None)
    with pytest.raises(WeightsError, match="itc tiny-zoo --only no-clip-here"):  # the hint names the part
        load_clip("tiny/no-clip-here")


def test_rank_clip_ranks_candidates_while_clip_stays_the_scoring_clip(tmp_path, random_lmm_dir):
    import yaml

    from itc_core.codec import ImageTextCodec
    from itc_core.config import load_config

    import torch

    torch.manual_seed(1)
    scoring = tiny_random_clip(tmp_path / "a")
    torch.manual_seed(2)
    ranking = tiny_random_clip(tmp_path / "b")
    preset = tmp_path / "ranked.yaml"
    preset.write_text(yaml.safe_dump({"base": "tiny", "caption": {
        "lmm": str(random_lmm_dir), "prompt": PROMPT, "max_new_tokens": 6, "select": "rerank", "candidates": 2,
        "clip": str(scoring), "rank_clip": str(ranking)}}))
    codec = ImageTextCodec(load_config(str(preset)))
    assert codec.clip is not codec.rank_clip
    image = sample(2_000_031)[0]
    choice = codec.choose_caption(image)
    assert choice.similarity == pytest.approx(codec.rank_clip.similarity(image, choice.candidates).tolist())
    plain = yaml.safe_load(preset.read_text())
    plain["caption"]["rank_clip"] = None  # (the tiny base preset has one)
    preset.write_text(yaml.safe_dump(plain))
    codec = ImageTextCodec(load_config(str(preset)))
    assert codec.rank_clip is codec.clip  # without rank_clip, the preset's CLIP ranks


def test_a_folder_that_is_not_a_clip_is_refused(random_lmm_dir):
    from itc_core.captioner import load_clip

    # transformers would load an LMM folder as a CLIP with every weight random; ranking with it is a silent failure
    with pytest.raises(WeightsError, match="not a CLIP"):
        load_clip(str(random_lmm_dir))
