import json

import pytest
import torch
from PIL import Image

from itc_core.config import ImageCodecConfig
from itc_core.errors import WeightsError
from itc_core.image_codec import ImageCodec
from itc_core.tinyworld.train_lic import load_lic_recipe, train_lic_zoo


def small_recipe(steps: int = 2) -> dict:
    return load_lic_recipe(overrides={
        "model": {"N": 16, "M": 24},
        "data": {"train_scenes": 16, "val_scenes": 2},
        "train": {"steps": steps, "batch_size": 2, "warmup": 0, "val_every": 1000, "device": "cpu"},
        "rate_points": {1: 0.001, 2: 0.05},
        "sizes": {2: {"M": 32}},  # a high rate point with more latent channels, as the shipped q7
        "test_scenes": 2,
        "then": {},  # the shipped q1-q3's second stages: tests that want one give their own
    })


def test_trains_exports_and_resumes(tmp_path):
    out, work = tmp_path / "lic", tmp_path / "work"
    manifest = train_lic_zoo(out, work, small_recipe())
    assert sorted(manifest["models"]) == ["1", "2"]
    entry = manifest["models"]["1"]
    for key in ("sha256", "lambda", "train_seconds", "steps"):
        assert key in entry
    assert entry["test"]["bpp_real"] > 0 and entry["test"]["scenes"] == 2
    assert json.loads((out / "manifest.json").read_text())["models"] == manifest["models"]

    assert (entry["M"], manifest["models"]["2"]["M"]) == (24, 32)

    weights = str(out / "mbt2018-mean-q{quality}.safetensors")
    cfg = ImageCodecConfig(N=16, M=24, sizes={2: {"M": 32}}, qualities=[1, 2], weights=weights)
    for q in (1, 2):
        codec = ImageCodec.from_config(cfg, q)
        payload = codec.compress(torch.rand(1, 3, 64, 64))
        assert codec.decompress(payload.strings, 64, 64).shape == (1, 3, 64, 64)
    with pytest.raises(WeightsError, match="do not fit"):  # the preset must give q2's own widths
        ImageCodec.from_config(ImageCodecConfig(N=16, M=24, qualities=[1, 2], weights=weights), 2)

    # A longer run resumes from the checkpoints instead of starting again.
    assert torch.load(work / "q1" / "checkpoint.pt", weights_only=True)["step"] == 2
    train_lic_zoo(out, work, small_recipe(steps=3), qualities=[1])
    assert torch.load(work / "q1" / "checkpoint.pt", weights_only=True)["step"] == 3
    assert torch.load(work / "q2-M32" / "checkpoint.pt", weights_only=True)["step"] == 2  # named by its widths
    stretches = json.loads((out / "manifest.json").read_text())["models"]["1"]["segments"]
    assert [(s["from_step"], s["to_step"], s["device"]) for s in stretches] == [(0, 2, "cpu"), (2, 3, "cpu")]


@pytest.mark.slow
def test_clip_and_lmm_recipes_train_save_and_load(tmp_path):
    from dataclasses import replace

    from transformers import AutoModelForImageTextToText, AutoProcessor, AutoTokenizer, CLIPModel

    from itc_core.tinyworld.train_clip import ClipRecipe, train_clip
    from itc_core.tinyworld.train_lmm import LmmRecipe, train_lmm

    clip = train_clip(tmp_path / "clip", tmp_path / "work" / "clip",
                      ClipRecipe(hidden=32, layers=1, projection=16, steps=2, batch_size=4, train_scenes=16,
                                 eval_scenes=12, candidates=10))
    assert 0 <= clip["retrieval_top1"] <= 1
    assert CLIPModel.from_pretrained(tmp_path / "clip").config.vision_config.hidden_size == 32
    lmm_recipe = LmmRecipe(hidden=32, layers=1, heads=2, kv_heads=1, steps=2, batch_size=4, train_scenes=16,
                           eval_scenes=4)
    lmm = train_lmm(tmp_path / "lmm", tmp_path / "clip", tmp_path / "work" / "lmm", lmm_recipe)
    assert 0 <= lmm["captioning_original"]["exact"] <= 1 and "captioning_lic_q1" in lmm
    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "lmm")
    processor = AutoProcessor.from_pretrained(tmp_path / "lmm")
    assert type(model).__name__ == "LlavaForConditionalGeneration" and processor.tokenizer.eos_token_id == 3
    # Its reconstructions and checkpoint are named by the LIC (and CLIP) they come from (a retrained LIC starts afresh).
    lmm_work = tmp_path / "work" / "lmm"
    assert [len(list(lmm_work.glob(p))) for p in ("lmm-*.pt", "recon_train_16-*.npy", "recon_val_4-*.npy")] == [1, 1, 1]
    # A second schedule from the trained LMM (init_from), its vision tower kept as it is (frozen_vision).
    train_lmm(tmp_path / "lmm2", tmp_path / "clip", lmm_work, replace(lmm_recipe, steps=1, eval_scenes=2,
              init_from=str(tmp_path / "lmm"), frozen_vision=True))
    first, second = (AutoModelForImageTextToText.from_pretrained(tmp_path / d).state_dict() for d in ("lmm", "lmm2"))
    assert len(list(lmm_work.glob("lmm-*.pt"))) == 2  # its own checkpoint
    tower = [k for k in first if "vision_tower" in k]
    assert tower and all(torch.equal(first[k], second[k]) for k in tower)
    assert not all(torch.equal(first[k], second[k]) for k in first if k not in tower)
    with pytest.raises(ValueError, match="init_from"):
        train_lmm(tmp_path / "bad", tmp_path / "clip", lmm_work, replace(lmm_recipe, hidden=16, init_from=str(tmp_path / "lmm")))

    # The caption reranker starts from the LMM's vision tower (frozen) and the CLIP's text tower.
    from itc_core.captioner import ClipScorer

    rerank = ClipRecipe(projection=16, steps=2, batch_size=4, train_scenes=16, eval_scenes=12, candidates=10,
                        hard_negatives=2, vision_from=str(tmp_path / "lmm"), text_from=str(tmp_path / "clip"),
                        extra_vision_layers=1)
    train_clip(tmp_path / "rerank", tmp_path / "work" / "rerank", rerank)
    ranker = CLIPModel.from_pretrained(tmp_path / "rerank")
    tower = model.model.vision_tower
    assert len(ranker.vision_model.encoder.layers) == len(tower.encoder.layers) + 1
    for name, value in tower.state_dict().items():  # the LMM's layers are not trained (the pooling's norm is)
        if not name.startswith("post_layernorm"):
            assert torch.equal(ranker.vision_model.state_dict()[name], value), name
    text_before = CLIPModel.from_pretrained(tmp_path / "clip").text_model.embeddings.token_embedding.weight
    assert not torch.equal(ranker.text_model.embeddings.token_embedding.weight, text_before)  # the text side learns
    # Retrained weights upstream (here the text tower's source) start a new run instead of resuming the old one.
    changed = CLIPModel.from_pretrained(tmp_path / "clip")
    changed.logit_scale.data += 1
    changed.save_pretrained(tmp_path / "clip2")
    AutoTokenizer.from_pretrained(tmp_path / "clip").save_pretrained(tmp_path / "clip2")
    train_clip(tmp_path / "rerank2", tmp_path / "work" / "rerank", replace(rerank, text_from=str(tmp_path / "clip2")))
    work = tmp_path / "work" / "rerank"
    # (the frozen tower's features depend on the LMM alone, so they are computed once)
    assert len(list(work.glob("features_*.pt"))) == 1 and len(list(work.glob("clip-*.pt"))) == 2
    # A second schedule starts every part from a trained ranker (init_from); a model of another shape is refused.
    train_clip(tmp_path / "again", tmp_path / "work" / "rerank", replace(rerank, steps=0, init_from=str(tmp_path / "rerank")))
    again = CLIPModel.from_pretrained(tmp_path / "again").state_dict()
    assert all(torch.equal(again[k], v) for k, v in ranker.state_dict().items())
    with pytest.raises(ValueError, match="init_from"):
        train_clip(tmp_path / "bad", tmp_path / "work" / "rerank", replace(rerank, init_from=str(tmp_path / "clip")))
    with pytest.raises(ValueError, match="vision_from"):
        train_clip(tmp_path / "bad", tmp_path / "work" / "bad", ClipRecipe(extra_vision_layers=1))
    # unfrozen_vision_layers: the LMM tower's top layers train too, the ones below stay as they were.
    train_clip(tmp_path / "top", tmp_path / "work" / "top", replace(rerank, unfrozen_vision_layers=1))
    top, last = CLIPModel.from_pretrained(tmp_path / "top").vision_model.state_dict(), len(tower.encoder.layers) - 1
    assert all(torch.equal(top[k], v) == (not k.startswith(f"encoder.layers.{last}.")) for k, v in tower.state_dict().items()
               if k.startswith("encoder.layers.") and k.endswith(".weight") and "norm" not in k)
    for bad in (len(tower.encoder.layers), -1):
        with pytest.raises(ValueError, match="unfrozen_vision_layers"):
            train_clip(tmp_path / "bad", tmp_path / "work" / "bad", replace(rerank, unfrozen_vision_layers=bad))
    with pytest.raises(ValueError, match="vision_from"):
        train_clip(tmp_path / "bad", tmp_path / "work" / "bad", ClipRecipe(unfrozen_vision_layers=1))
    scorer = ClipScorer.from_pretrained(str(tmp_path / "rerank"))
    assert scorer.similarity(Image.new("RGB", (64, 64)), ["a small red circle", "a large blue star"]).shape == (2,)
    bad = ClipRecipe(projection=8, text_from=str(tmp_path / "clip"))
    with pytest.raises(ValueError, match="projection"):
        train_clip(tmp_path / "bad", tmp_path / "work" / "bad", bad)


def test_hard_negative_variants_change_exactly_one_attribute(tmp_path):
    import random

    from itc_core.tinyworld import generate_scene, parse_caption
    from itc_core.tinyworld.train_clip import ClipRecipe, train_clip, variant_caption

    rng = random.Random(0)
    for seed in range(2_000_000, 2_000_030):
        scene = generate_scene(seed)
        variant = parse_caption(variant_caption(scene, rng))
        changed = [(a, b) for a, b in zip(scene.objects, variant.objects) if a != b]
        assert len(changed) == 1 and variant.background == scene.background
        a, b = changed[0]
        assert sum(getattr(a, f) != getattr(b, f) for f in ("shape", "colour", "size", "position")) == 1
    report = train_clip(tmp_path / "clip", tmp_path / "work",
                        ClipRecipe(hidden=32, layers=1, projection=16, patch=4, hard_negatives=2, steps=2,
                                   batch_size=4, train_scenes=16, eval_scenes=12, candidates=10))
    assert set(report["true_caption_beats_every_variant"]) == {"shape", "colour", "size"}


def test_recipe_rate_points_may_carry_their_own_widths(tmp_path):
    import yaml

    from itc_core.tinyworld.train_lic import RECIPE

    values = yaml.safe_load(RECIPE.read_text())
    values["rate_points"][11] = {"lambda": 0.3, "M": 192}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(values))
    recipe = load_lic_recipe(path=path)
    assert recipe["rate_points"][11] == 0.3 and recipe["sizes"][11] == {"M": 192}
    values["rate_points"][11] = {"lambda": 0.3, "K": 8}
    path.write_text(yaml.safe_dump(values))
    with pytest.raises(ValueError, match="rate point 11 takes lambda, N, M, from, train and then"):
        load_lic_recipe(path=path)
    values["rate_points"][11] = {"lambda": 2.0, "from": 1, "train": {"steps": 10, "lr": 1e-4}}
    path.write_text(yaml.safe_dump(values))
    recipe = load_lic_recipe(path=path, overrides={"train": {"steps": 3}})  # --steps shortens every schedule
    assert recipe["starts"][11] == 1 and recipe["train"][11] == {"steps": 3, "lr": 1e-4}
    values["rate_points"][11] = {"lambda": 2.0, "from": 1, "M": 192}  # wider latents than its start: widened
    path.write_text(yaml.safe_dump(values))
    assert load_lic_recipe(path=path)["sizes"][11] == {"M": 192}
    for bad in ({"lambda": 2.0, "from": 12}, {"lambda": 2.0, "from": 1, "M": 64}, {"lambda": 2.0, "from": 1, "N": 32}):
        # not lower; fewer latent channels; another N
        values["rate_points"][11] = bad
        path.write_text(yaml.safe_dump(values))
        with pytest.raises(ValueError, match="rate point 11 starts from"):
            load_lic_recipe(path=path)


def test_a_rate_point_fine_tuned_from_a_lower_one(tmp_path):
    """A high-λ point starts from a lower point's exported weights with its own schedule (the shipped q7, q8)."""
    from safetensors.torch import load_file

    recipe = small_recipe()
    recipe.update(rate_points={1: 0.001, 3: 0.2}, sizes={}, starts={3: 1}, train={3: {"steps": 1, "lr": 1e-6}})
    out, work = tmp_path / "lic", tmp_path / "work"
    with pytest.raises(WeightsError, match="train it first"):
        train_lic_zoo(out, work, recipe, qualities=[3])
    manifest = train_lic_zoo(out, work, recipe)
    assert manifest["recipe"]["starts"] == {"3": 1}
    run3, = work.glob("q3-*")  # named by the weights it starts from
    assert torch.load(run3 / "checkpoint.pt", weights_only=True)["step"] == 1  # its own schedule
    low, high = load_file(out / "mbt2018-mean-q1.safetensors"), load_file(out / "mbt2018-mean-q3.safetensors")
    weight = "g_a.0.weight"
    assert torch.allclose(low[weight].float(), high[weight].float(), atol=1e-2)  # one tiny step away from q1

    # A point with more latent channels than the one it starts from begins as a widened copy of it.
    recipe.update(rate_points={1: 0.001, 3: 0.2, 4: 0.3}, sizes={4: {"M": 32}}, starts={3: 1, 4: 1},
                  train={3: {"steps": 1, "lr": 1e-6}, 4: {"steps": 1, "lr": 1e-6}})
    manifest = train_lic_zoo(out, work, recipe, qualities=[4])
    wide = load_file(out / "mbt2018-mean-q4.safetensors")
    assert manifest["models"]["4"]["M"] == 32 and wide["g_a.6.weight"].shape[0] == 32
    assert torch.allclose(low["g_a.6.weight"].float(), wide["g_a.6.weight"][:24].float(), atol=1e-2)

    # q1 retrained (one more step): q3 starts again from it instead of re-exporting the run from the old q1 ...
    recipe["run"]["train"]["steps"] += 1
    train_lic_zoo(out, work, recipe, qualities=[1])
    train_lic_zoo(out, work, recipe, qualities=[3])
    assert len(list(work.glob("q3-*/checkpoint.pt"))) == 2
    # ... and a finetune run pointed at a folder started from other weights is refused, the folder untouched.
    from itc_core.errors import ConfigError
    from itc_core.finetune import load_finetune_config, train

    run = dict(recipe["run"], loss={"kappa": {"mse": 1.0}, "lmbda": 0.2}, out_dir=str(run3),
               model={**recipe["run"]["model"], "init": str(out / "mbt2018-mean-q1.safetensors")},
               train={**recipe["run"]["train"], "steps": 1})
    before = (run3 / "checkpoint.pt").read_bytes()
    with pytest.raises(ConfigError, match="started from other weights"):
        train(load_finetune_config(run), quiet=True)
    assert (run3 / "checkpoint.pt").read_bytes() == before


def test_files_tag_changes_with_bytes_and_names(tmp_path):
    from itc_core.tinyworld.checkpoint import files_tag

    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"weights")
    b.write_bytes(b"more")
    tag = files_tag([a, b])
    assert len(tag) == 13 and tag == files_tag([b, a])  # order-free
    (tmp_path / "elsewhere").mkdir()
    moved = (tmp_path / "elsewhere" / "b.bin")
    moved.write_bytes(b"more")
    assert files_tag([a, moved]) == tag  # folders do not count (relative or absolute paths, copies)
    b.write_bytes(b"morf")
    changed = files_tag([a, b])
    assert changed != tag
    c = a.rename(tmp_path / "c.bin")  # the same bytes under another name (rate points swapped)
    assert files_tag([c, b]) not in (tag, changed)


def test_recipe_flags_read_booleans_tuples_and_optional_numbers():
    import argparse

    from itc_core.tinyworld.checkpoint import add_recipe_arguments, recipe_from_arguments
    from itc_core.tinyworld.train_lmm import LmmRecipe
    from itc_core.tinyworld.train_restorer import RestorerRecipe

    def parse(cls, *argv):
        parser = argparse.ArgumentParser()
        add_recipe_arguments(parser, cls)
        return recipe_from_arguments(parser.parse_args(list(argv)), cls)

    assert parse(LmmRecipe) == LmmRecipe()
    assert parse(LmmRecipe, "--frozen-vision", "--steps", "5").frozen_vision is True
    assert parse(LmmRecipe, "--no-frozen-vision").frozen_vision is False
    restorer = parse(RestorerRecipe, "--channels", "32,64,64", "--max-minutes", "5.5")
    assert restorer.channels == (32, 64, 64) and restorer.max_minutes == 5.5


def test_a_time_boxed_schedule_ends_within_its_minutes():
    from itc_core.tinyworld.train_clip import fit_schedule, warmup_cosine

    def optimiser():
        return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)

    opt = optimiser()
    planned = warmup_cosine(opt, 1000, 100 / 1000)
    for _ in range(50):  # the timed first 50 steps
        opt.step()
        planned.step()
    steps, sched = fit_schedule(opt, 50, seconds=10.0, minutes=1.0, steps=1000, warmup_steps=100)
    assert steps == 300  # 50 steps took 10 s: 60 s hold 300
    reference = optimiser()
    fresh = warmup_cosine(reference, 300, 100 / 300)
    for _ in range(50):
        reference.step()
        fresh.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(reference.param_groups[0]["lr"])  # continued at step 50
    for _ in range(250):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-4)  # decayed by the fitted end
    assert fit_schedule(optimiser(), 50, seconds=10.0, minutes=10.0, steps=1000) is None  # 3,000 fit: unchanged


def test_a_rate_point_with_a_second_stage(tmp_path):
    """``then``: after its schedule, a point trains again from its own final weights with the loss and schedule
    given there (the shipped q1-q3: MSE, then the periodic term), and ships the second stage's weights."""
    from safetensors.torch import load_file

    recipe = small_recipe()
    then = {"loss": {"kappa": {"mse": 1.0, "periodic": 300.0}, "periodic_target_max": 50}, "train": {"steps": 1}}
    recipe.update(rate_points={1: 0.001}, sizes={}, then={1: then})
    out, work = tmp_path / "lic", tmp_path / "work"
    manifest = train_lic_zoo(out, work, recipe)
    entry = manifest["models"]["1"]
    assert (entry["steps"], entry["then"]["steps"]) == (2, 1)
    assert entry["then"]["loss"]["kappa"] == {"mse": 1.0, "periodic": 300.0} and entry["then"]["loss"]["lmbda"] == 0.001
    stage2, = (work / "q1").glob("then-*")  # named by the first stage's weights
    assert torch.load(stage2 / "checkpoint.pt", weights_only=True)["step"] == 1
    first, second = (load_file(str(d / "final.safetensors")) for d in (work / "q1", stage2))
    assert not torch.equal(first["g_s.0.weight"], second["g_s.0.weight"])
    shipped = load_file(str(out / entry["file"]))
    assert torch.equal(shipped["g_s.0.weight"], second["g_s.0.weight"].half())
    assert manifest["recipe"]["then"] == {"1": then}


def test_a_second_stage_waits_for_an_unfinished_first_and_refuses_its_own_lambda(tmp_path, monkeypatch):
    import yaml

    from itc_core.tinyworld import train_lic
    from itc_core.tinyworld.train_lic import RECIPE

    real_train = train_lic.train

    def stopped_early(cfg):  # as a time box (max_minutes) would leave it: checkpointed, not finished
        return {**real_train(cfg), "steps": 1}

    monkeypatch.setattr(train_lic, "train", stopped_early)
    recipe = small_recipe()
    recipe.update(rate_points={1: 0.001}, sizes={}, then={1: {"loss": {"kappa": {"periodic": 1.0}}}})
    manifest = train_lic_zoo(tmp_path / "lic", tmp_path / "work", recipe)
    assert "then" not in manifest["models"]["1"] and not list((tmp_path / "work" / "q1").glob("then-*"))

    values = yaml.safe_load(RECIPE.read_text())
    path = tmp_path / "recipe.yaml"
    for bad in ({"optimiser": {}}, {"loss": {"lmbda": 0.1}}, {"train": 3}):
        values["rate_points"][1] = {"lambda": 0.001, "then": bad}
        path.write_text(yaml.safe_dump(values))
        with pytest.raises(ValueError, match="without a λ of its own"):
            load_lic_recipe(path=path)
    values["rate_points"][1] = {"lambda": 0.001, "then": {"loss": {"kappa": {"mse": 1.0}}}}
    path.write_text(yaml.safe_dump(values))
    assert load_lic_recipe(path=path)["then"][1] == {"loss": {"kappa": {"mse": 1.0}}}
    shortened = load_lic_recipe(overrides={"train": {"steps": 5}})  # `itc tiny-zoo --steps 5`: second stages too
    assert {q: stage["train"]["steps"] for q, stage in shortened["then"].items()} == {1: 5, 2: 5, 3: 5}


def test_reports_record_the_command_that_ran(monkeypatch):
    """A report's ``command`` is the process's own command line, not a fixed string."""
    import sys
    import types

    from itc_core.tinyworld.checkpoint import command_line

    monkeypatch.setattr(sys, "argv", ["/venv/bin/itc", "tiny-zoo", "--only", "referee", "--steps", "3"])
    monkeypatch.setitem(sys.modules, "__main__", types.SimpleNamespace(__spec__=None))
    assert command_line() == "itc tiny-zoo --only referee --steps 3"
    monkeypatch.setattr(sys, "argv", ["/repo/itc_core/tinyworld/train_lmm.py", "--lr", "1e-4", "--out", "a b"])
    monkeypatch.setitem(sys.modules, "__main__",
                        types.SimpleNamespace(__spec__=types.SimpleNamespace(name="itc_core.tinyworld.train_lmm")))
    assert command_line() == "python -m itc_core.tinyworld.train_lmm --lr 1e-4 --out 'a b'"
