"""``benchmarks/caption_quality.py``'s miss report: wrong captions drawn again with their scene's seed."""

import importlib.util
from dataclasses import replace
from pathlib import Path

from itc_core.tinyworld import caption, generate_scene, split_seeds

_spec = importlib.util.spec_from_file_location(
    "caption_quality", Path(__file__).parents[1] / "benchmarks" / "caption_quality.py")
caption_quality = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(caption_quality)


def _row(seed: int, text: str) -> dict:
    return {"seed": seed, "caption": text, "exact": text == caption(generate_scene(seed))}


def test_miss_report_counts_the_pixels_a_wrong_shape_changes_and_whether_the_object_was_small():
    seed = next(s for s in split_seeds("test", 200) if len(generate_scene(s).objects) == 1)
    scene = generate_scene(seed)
    obj = scene.objects[0]
    other = "square" if obj.shape != "square" else "circle"
    wrong = caption(replace(scene, objects=(replace(obj, shape=other),)))
    report = caption_quality.miss_report([_row(seed, caption(scene)), _row(seed, wrong), _row(seed, "not a caption")])
    assert report["count"] == 2 and report["unparsable"] == 1
    assert report["pixels_min"] == report["pixels_max"] > 0  # one parsable miss, and its shape shows
    assert report["small_objects_only"] == (obj.size == "small")


def test_miss_report_of_exact_captions_is_empty():
    seeds = split_seeds("test", 3)
    report = caption_quality.miss_report([_row(s, caption(generate_scene(s))) for s in seeds])
    assert report == {"count": 0, "unparsable": 0, "small_objects_only": 0}
