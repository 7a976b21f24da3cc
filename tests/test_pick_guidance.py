"""``benchmarks/pick_guidance.py`` and ``itc_core.evaluate.guidance_study``: the guidance per rate point, on a real (tiny) run."""

import importlib.util
from pathlib import Path

from itc_core.codec import ImageTextCodec
from itc_core.evaluate import guidance_study
from itc_core.tinyworld import split_seeds
from itc_core.tinyworld.referee import Referee

_spec = importlib.util.spec_from_file_location(
    "pick_guidance", Path(__file__).parents[1] / "benchmarks" / "pick_guidance.py")
pick_guidance = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pick_guidance)


def test_best_takes_the_most_exact_scenes_and_breaks_ties_by_distance():
    rows = {1.0: {"exact": 50.0, "referee_distance": 0.09}, 1.5: {"exact": 52.5, "referee_distance": 0.095},
            2.0: {"exact": 52.5, "referee_distance": 0.091}, 3.0: {"exact": 40.0, "referee_distance": 0.08}}
    assert pick_guidance.best(rows) == 2.0


def test_guidance_table_scores_every_point_and_scale_on_val_scenes():
    table = guidance_study(ImageTextCodec.from_preset("tiny"), Referee.load(), split_seeds("val", 2), [1], [1.0, 2.0])
    assert set(table) == {1} and set(table[1]) == {1.0, 2.0}
    for scores in table[1].values():
        assert 0 <= scores["exact"] <= 100 and scores["referee_distance"] > 0 and scores["psnr"] > 10
    assert table[1][1.0] != table[1][2.0]  # the guidance reaches the restorer
