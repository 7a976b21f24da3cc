"""The restorer: colour fix, the tiny pipeline, the hub pipelines (tiny random components of the real classes), wiring."""

import json
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from itc_core.codec import ImageTextCodec
from itc_core.config import RestorerConfig, load_config
from itc_core.data import image_to_tensor
from itc_core.errors import ConfigError, WeightsError
from itc_core.restorer import Restorer, TinyRestorerPipeline, wavelet_colour_fix
from itc_core.tinyworld import sample


def test_colour_fix_is_identity_on_the_reference_and_removes_a_colour_cast():
    x = image_to_tensor(sample(2_000_020)[0])
    assert torch.allclose(wavelet_colour_fix(x, x), x, atol=1e-5)
    cast = (x + torch.tensor([0.2, -0.1, 0.0])[:, None, None]).clamp(0, 1)
    fixed = wavelet_colour_fix(cast, x)
    assert (fixed - x).abs().mean() < 0.3 * (cast - x).abs().mean()
    assert (fixed - x).abs().mean() > 0  # high bands come from the restored image


def tiny_random_pipeline(directory, seed: int = 0):
    """A small random TinyRestorerPipeline saved with save_pretrained; returns the folder."""
    from diffusers import DDIMScheduler
    from transformers import CLIPTextConfig, CLIPTextModel

    from itc_core.tinyworld.tokenizer import train_tokenizer
    from itc_core.tinyworld.train_restorer import RestorerRecipe, build_unet

    torch.manual_seed(seed)
    tok = train_tokenizer(vocab_size=300, n_captions=200)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, max_position_embeddings=48, pad_token_id=tok.pad_token_id,
                                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id))
    unet = build_unet(RestorerRecipe(channels=(16, 16, 32), heads=(1, 1, 2)), cross_attention_dim=16)
    scheduler = DDIMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="sample", clip_sample=False,
                              set_alpha_to_one=True, timestep_spacing="trailing")
    path = directory / f"restorer-{seed}"
    TinyRestorerPipeline(unet, scheduler, text, tok).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_restorer(tmp_path_factory):
    return Restorer(RestorerConfig(model=str(tiny_random_pipeline(tmp_path_factory.mktemp("restorer")))))


def test_tiny_pipeline_is_seeded_and_follows_its_arguments(tiny_restorer):
    image, text = sample(2_000_021)
    a = tiny_restorer.restore(image, text, steps=2, seed=3)
    assert a.size == image.size and a.mode == "RGB"
    assert tiny_restorer.restore(image, text, steps=2, seed=3).tobytes() == a.tobytes()
    assert tiny_restorer.restore(image, text, steps=2, seed=4).tobytes() != a.tobytes()
    assert tiny_restorer.restore(image, text, steps=2, seed=3, colour_fix=False).tobytes() != a.tobytes()
    odd = image.crop((0, 0, 37, 21))  # any size: padded to the UNet's multiple, cropped back
    assert tiny_restorer.restore(odd, "", steps=1).size == (37, 21)


def _levels_apart(x: Image.Image, y: Image.Image) -> tuple[int, float]:
    """(max, mean) absolute difference of two uint8 images, in levels."""
    diff = np.abs(np.asarray(x, dtype=np.int16) - np.asarray(y, dtype=np.int16))
    return int(diff.max()), float(diff.mean())


def assert_same_restoration(x: Image.Image, y: Image.Image) -> None:
    """Restorations of one input that may differ only in float rounding: a batch of three runs other kernel
    shapes than one image does (bit-identical on some CPUs, not on AVX2-only ones), and 2 denoising steps
    amplify a last-bit difference to at most a few levels. Guidance 1 against 2.5 moves the mean by 1.5 levels."""
    most, mean = _levels_apart(x, y)
    assert most <= 4 and mean <= 0.1, (most, mean)


def test_guidance_per_rate_point_applies_to_each_image_of_a_batch(tiny_restorer):
    """A batch with images of two rate points restores each as it would alone, with its own point's guidance."""
    per_point = Restorer(replace(tiny_restorer.config, guidance=1.0, guidance_by_quality={1: 2.5}))
    per_point._pipe = tiny_restorer.pipeline  # the same weights, loaded once
    (a, _), (b, _) = sample(2_000_023), sample(2_000_024)
    text = "a red star at the top left on a plain white background"
    batch = per_point.restore_batch([a, b, a], [text] * 3, steps=2, qualities=[1, 2, None])
    assert_same_restoration(batch[0], tiny_restorer.restore(a, text, steps=2, guidance=2.5))
    assert_same_restoration(batch[1], tiny_restorer.restore(b, text, steps=2, guidance=1.0))
    assert_same_restoration(batch[2], tiny_restorer.restore(a, text, steps=2, guidance=1.0))
    assert _levels_apart(batch[0], batch[2])[1] > 0.5  # the guidance made a difference, well beyond rounding
    # One image at a time runs the same kernels: there the rate point's guidance must give the very same bytes.
    assert (per_point.restore(a, text, steps=2, quality=1).tobytes()
            == tiny_restorer.restore(a, text, steps=2, guidance=2.5).tobytes())
    assert (per_point.restore(a, text, steps=2, quality=1, guidance=1.0).tobytes()
            == tiny_restorer.restore(a, text, steps=2, guidance=1.0).tobytes())  # explicit wins
    with pytest.raises(ValueError, match="qualities"):
        per_point.restore_batch([a, b], [text] * 2, qualities=[1])


def test_a_preset_that_sets_guidance_sets_it_at_every_rate_point(tmp_path):
    tiny = load_config("tiny").restorer
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"base": "tiny", "restorer": {"guidance": 3.0}}))
    mine = load_config(str(path)).restorer
    assert [mine.guidance_at(q) for q in (1, 2, None)] == [3.0, 3.0, 3.0]
    path.write_text(yaml.safe_dump({"base": "tiny", "restorer": {"guidance": 3.0, "guidance_by_quality": {2: 0.5}}}))
    mine = load_config(str(path)).restorer
    assert [mine.guidance_at(q) for q in (1, 2)] == [3.0, 0.5]
    path.write_text(yaml.safe_dump({"base": "tiny", "restorer": {"steps": 2}}))
    assert load_config(str(path)).restorer.guidance_by_quality == tiny.guidance_by_quality
    path.write_text(yaml.safe_dump({"base": "tiny", "restorer": {"kind": "sd-img2img", "model": "some/turbo"}}))
    assert load_config(str(path)).restorer.guidance_by_quality == {}  # tuned for tiny's restorer, not another's


def test_restore_without_restorer_or_with_bad_arguments():
    image = sample(2_000_022)[0]
    assert Restorer(RestorerConfig(kind=None)).restore(image, "a caption") is image
    with pytest.raises(ConfigError):
        Restorer(RestorerConfig(kind="magic"))
    with pytest.raises(WeightsError, match="restorer"):
        Restorer(RestorerConfig(model="/nonexistent/restorer")).restore(image, "")


def test_config_checks_the_restorer_section(tmp_path):
    assert load_config("tiny").restorer.kind == "tiny"
    for bad in ({"kind": "magic"}, {"steps": 0}, {"guidance": -1}, {"colour_fix": "yes"},
                {"guidance_by_quality": {1: -2}}, {"guidance_by_quality": {"q1": 2}}, {"guidance_by_quality": [2]}):
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump({"base": "tiny", "restorer": bad}))  # YAML: the rate points stay integers
        with pytest.raises(ConfigError, match="restorer"):
            load_config(str(path))


def _hub_components(directory):
    """Tiny random SD img2img pipeline and ControlNet folders (diffusers' own test sizes), offline tokenizer."""
    from diffusers import (AutoencoderKL, ControlNetModel, DDIMScheduler, StableDiffusionImg2ImgPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    torch.manual_seed(0)
    blocks = dict(block_out_channels=(4, 8), layers_per_block=2, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                  cross_attention_dim=32, norm_num_groups=1)
    unet = UNet2DConditionModel(sample_size=32, in_channels=4, out_channels=4,
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), **blocks)
    controlnet = ControlNetModel(in_channels=4, conditioning_embedding_out_channels=(16, 32), **blocks)
    vae = AutoencoderKL(block_out_channels=[4, 8], in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=2,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2)
    chars = list(bytes_to_unicode().values())
    vocab = {t: i for i, t in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])}
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    text = CLIPTextModel(CLIPTextConfig(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=5,
                                        vocab_size=len(vocab), bos_token_id=vocab["<|startoftext|>"],
                                        eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["<|endoftext|>"]))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False)
    pipe = StableDiffusionImg2ImgPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                          safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(directory / "sd")
    controlnet.save_pretrained(directory / "controlnet")
    return directory / "sd", directory / "controlnet"


@pytest.mark.parametrize("kind", ["sd-img2img", "sd-controlnet-img2img"])
def test_hub_restorers_run_the_real_pipelines_end_to_end(tmp_path, kind):
    sd, controlnet = _hub_components(tmp_path)
    cfg = RestorerConfig(kind=kind, model=str(sd), controlnet=str(controlnet) if "controlnet" in kind else None,
                         scheduler="EulerDiscreteScheduler", steps=4, strength=0.5, guidance=3.0,
                         negative_prompt="blurry", colour_fix=False)
    restorer = Restorer(cfg)
    restorer.pipeline.set_progress_bar_config(disable=True)
    assert type(restorer.pipeline.scheduler).__name__ == "EulerDiscreteScheduler"
    if "controlnet" in kind:
        assert type(restorer.pipeline).__name__ == "StableDiffusionControlNetImg2ImgPipeline"
    image, text = sample(2_000_023)
    a = restorer.restore(image, text, seed=1)
    assert a.size == (64, 64)
    assert restorer.restore(image, text, seed=1).tobytes() == a.tobytes()
    assert restorer.restore(image, text, seed=2).tobytes() != a.tobytes()
    assert restorer.restore(image.crop((0, 0, 48, 40)), text, seed=1).size == (48, 40)


def test_codec_decode_returns_reconstruction_and_restored_image(tiny_restorer):
    codec = ImageTextCodec.from_preset("tiny")
    codec._restorer = tiny_restorer
    image, text = sample(2_000_024)
    result = codec.encode(image, caption=text, method="utf8")
    decoded = codec.decode(result.data, steps=2, seed=5)
    assert decoded.reconstruction.tobytes() == result.reconstruction.tobytes()
    assert decoded.image is decoded.restored
    assert decoded.restored.tobytes() == tiny_restorer.restore(result.reconstruction, text, steps=2, seed=5).tobytes()
    per_point = Restorer(replace(tiny_restorer.config, guidance_by_quality={result.quality: 2.5}))
    per_point._pipe = tiny_restorer.pipeline
    codec._restorer = per_point  # the file's rate point picks the guidance
    assert codec.decode(result.data, steps=2, seed=5).restored.tobytes() == tiny_restorer.restore(
        result.reconstruction, text, steps=2, seed=5, guidance=2.5).tobytes() != decoded.restored.tobytes()
    bare = codec.decode(result.data, restore=False)
    assert bare.restored is None and bare.image is bare.reconstruction


def _itc(*args):
    """``itc`` in a fresh process with the tests' one torch thread (restored pixels may move by one level with the
    thread count: sums are ordered differently)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "itc_core.cli", *map(str, args)], capture_output=True, text=True, env=env)


@pytest.mark.slow
def test_cli_decode_restores_with_flags_and_same_seed_gives_same_bytes_in_a_fresh_process(tmp_path, capsys):
    """The shipped tiny world end to end (the LMM's caption coded by ``lmm-ac``, the restorer): a fresh `itc decode`
    and this long-lived process (models loaded, random streams drawn by other tests) agree byte for byte."""
    from itc_core.cli import main

    image, _ = sample(2_000_025)
    codec = ImageTextCodec.from_preset("tiny")
    (tmp_path / "s.itc").write_bytes(codec.encode(image).data)
    done = _itc("decode", tmp_path / "s.itc", "-o", tmp_path / "a.png", "--seed", "7", "--steps", "2", "--guidance", "2")
    assert done.returncode == 0, done.stderr
    here = codec.decode((tmp_path / "s.itc").read_bytes(), seed=7, steps=2, guidance=2.0)
    assert Image.open(tmp_path / "a.png").tobytes() == here.restored.tobytes()
    default = codec.decode((tmp_path / "s.itc").read_bytes())  # the preset's guidance at the file's rate point
    guidance = codec.config.restorer.guidance_at(default.file.quality)
    assert default.restored.tobytes() == codec.restorer.restore(here.reconstruction, here.caption,
                                                                guidance=guidance).tobytes()
    itc_file = str(tmp_path / "s.itc")
    assert main(["decode", itc_file, "-o", str(tmp_path / "bare.png"), "--no-restore"]) == 0
    assert Image.open(tmp_path / "bare.png").tobytes() == here.reconstruction.tobytes()
    capsys.readouterr()
    assert main(["decode", itc_file, "-o", str(tmp_path / "x.png"), "--no-restore", "--steps", "3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("itc: error:") and len(err.strip().splitlines()) == 1
    assert main(["decode", itc_file, "-o", str(tmp_path / "x.png"), "--steps", "0"]) == 2
    assert "steps" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "x.png").exists()


@pytest.mark.slow
def test_recipe_trains_exports_resumes_and_loads(tmp_path):
    from itc_core.config import data_dir
    from itc_core.tinyworld import generate_scene
    from itc_core.tinyworld.train_restorer import RestorerRecipe, recolour_scene, train_restorer

    for seed in range(20):  # "trust the caption" samples: exactly one object changes colour, never to the background's
        scene, k = recolour_scene(seed)
        before = generate_scene(seed).objects[k]
        assert scene.objects[k].colour not in (before.colour, scene.background)
        assert [o for i, o in enumerate(scene.objects) if i != k] == [o for i, o in enumerate(generate_scene(seed).objects) if i != k]
    recipe = RestorerRecipe(channels=(16, 16, 32), heads=(1, 1, 2), steps=2, batch_size=3, train_scenes=12,
                            eval_scenes=2)
    out, work = tmp_path / "restorer", tmp_path / "work"
    report = train_restorer(out, data_dir() / "tiny" / "clip", work, recipe)
    assert report["steps_done"] == 2 and [v["quality"] for v in report["val"]] == [1, 2]
    ckpt, = work.glob("restorer-*.pt")  # named by the LIC and CLIP it learnt from
    assert torch.load(ckpt, weights_only=True)["step"] == 2
    recipe.steps = 3
    assert train_restorer(out, data_dir() / "tiny" / "clip", work, recipe)["steps_done"] == 3
    assert list(work.glob("restorer-*.pt")) == [ckpt]  # resumed
    # A retrained CLIP upstream starts a new run instead of resuming one that learnt from the old weights.
    from transformers import CLIPModel, CLIPTokenizer
    changed = CLIPModel.from_pretrained(data_dir() / "tiny" / "clip")
    changed.logit_scale.data += 1
    changed.save_pretrained(tmp_path / "clip2")
    CLIPTokenizer.from_pretrained(data_dir() / "tiny" / "clip").save_pretrained(tmp_path / "clip2")
    recipe.steps = 1
    # (the LIC given as a folder, here the same files as the preset's: the cached reconstructions are reused)
    assert train_restorer(tmp_path / "restorer2", tmp_path / "clip2", work, recipe,
                          lic_dir=data_dir() / "tiny" / "lic")["steps_done"] == 1
    assert len(list(work.glob("restorer-*.pt"))) == 2 and len(list(work.glob("data_*.pt"))) == 1
    restored = Restorer(RestorerConfig(model=str(out))).restore(sample(6)[0], sample(6)[1], steps=1)
    assert restored.size == (64, 64)
    # A second schedule from the trained restorer (e.g. on a retrained LIC) starts at its weights, in a run of its own.
    train_restorer(tmp_path / "second", data_dir() / "tiny" / "clip", work, replace(recipe, steps=0, init_from=str(out)))
    first, second = (load_file(d / "unet" / "diffusion_pytorch_model.safetensors") for d in (out, tmp_path / "second"))
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    with pytest.raises(ValueError, match="does not fit"):
        train_restorer(tmp_path / "bad", data_dir() / "tiny" / "clip", work,
                       replace(recipe, channels=(16, 16, 16), init_from=str(out)))
