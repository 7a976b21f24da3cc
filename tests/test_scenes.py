import hashlib
from collections import Counter

import numpy as np
import pytest

from itc_core.tinyworld import scenes as S

# Regenerate only on purpose: a change here means every shipped model saw other data.
GOLDEN = {
    0: ("fb20c9569f72aa3f", "a large gray diamond in the centre on a dotted purple background"),
    1: ("dc5623d7093728dc", "a large gray cross at the top and a small white hexagon at the bottom on a plain yellow background"),
    2000000: ("31dbe76cf8162808", "a large purple hexagon at the top right on a plain gray background"),
}


@pytest.mark.parametrize("seed", sorted(GOLDEN))
def test_golden_scenes_are_identical_on_every_machine(seed):
    image, text = S.sample(seed)
    assert image.size == (64, 64) and image.mode == "RGB"
    assert (hashlib.sha256(np.asarray(image).tobytes()).hexdigest()[:16], text) == GOLDEN[seed]


def test_same_seed_same_scene_other_seed_other_pixels():
    assert S.sample(5)[1] == S.sample(5)[1]
    assert np.array_equal(np.asarray(S.sample(5)[0]), np.asarray(S.sample(5)[0]))
    assert not np.array_equal(np.asarray(S.sample(5)[0]), np.asarray(S.sample(6)[0]))


def test_vocabulary_meets_the_design():
    assert len(S.SHAPES) >= 6 and len(S.COLOURS) >= 8 and len(S.SIZES) == 2
    assert len(S.POSITIONS) == 9 and len(S.PATTERNS) >= 4  # plain + at least 3 patterns


def test_captions_parse_back_and_cover_every_attribute():
    seen = Counter()
    for seed in range(3000):
        scene = S.generate_scene(seed)
        assert S.parse_caption(S.caption(scene)) == scene
        positions = [o.position for o in scene.objects]
        assert 1 <= len(scene.objects) <= 3 and len(set(positions)) == len(positions)
        assert all(o.colour != scene.background for o in scene.objects)
        seen.update([("n", len(scene.objects)), ("pattern", scene.pattern), ("background", scene.background)])
        for o in scene.objects:
            seen.update([("shape", o.shape), ("colour", o.colour), ("size", o.size), ("position", o.position)])
    for kind, values in [("shape", S.SHAPES), ("colour", S.COLOURS), ("size", S.SIZES),
                         ("position", S.POSITIONS), ("pattern", S.PATTERNS), ("n", (1, 2, 3))]:
        assert all(seen[(kind, v)] > 0 for v in values), kind


@pytest.mark.parametrize("bad", ["", "a red circle", "a large red circle at the top on a plain red", "a huge red circle in the centre on a plain blue background",
                                 "a large red circle at the middle on a plain blue background"])
def test_parser_rejects_other_text(bad):
    with pytest.raises(ValueError, match="tiny-world"):
        S.parse_caption(bad)


def test_splits_are_disjoint_and_bounded():
    ranges = [range(*S.SPLITS[s]) for s in ("train", "val", "test")]
    for a in range(3):
        for b in range(a + 1, 3):
            assert not set(ranges[a][:1000]) & set(ranges[b][:1000])
            assert ranges[a].stop <= ranges[b].start
    assert list(S.split_seeds("test", 3)) == [2_000_000, 2_000_001, 2_000_002]
    with pytest.raises(ValueError, match="unknown split"):
        S.split_seeds("dev", 1)
    with pytest.raises(ValueError, match="holds"):
        S.split_seeds("val", 10**7)


def test_batch_shape_and_other_sizes():
    assert S.batch(range(3)).shape == (3, 64, 64, 3)
    assert S.render(S.generate_scene(0), size=96).size == (96, 96)


def test_dot_grid_contrast_sees_a_faint_grid_and_nothing_else():
    from dataclasses import replace

    import numpy as np
    from PIL import Image

    from itc_core.tinyworld import generate_scene, render
    from itc_core.tinyworld.texture import dot_grid_colour_cosine, dot_grid_contrast

    seed = next(s for s in range(200) if generate_scene(s).pattern == "plain")
    scene = generate_scene(seed)
    clean = render(scene, seed=seed)
    assert dot_grid_contrast(clean, scene, seed) == 0.0
    dotted = render(replace(scene, pattern="dotted"), seed=seed)
    full = dot_grid_contrast(dotted, scene, seed)
    assert full > 10
    # A tenth of the dotted pattern blended in reads as about a tenth of its contrast; the control lattice,
    # half a period away, sees none of it.
    blend = 0.9 * np.asarray(clean, np.float32) + 0.1 * np.asarray(dotted, np.float32)
    faint = Image.fromarray(blend.round().astype(np.uint8))
    assert abs(dot_grid_contrast(faint, scene, seed) - 0.1 * full) < 1.0
    assert dot_grid_contrast(faint, scene, seed, shift=4) < 0.5
    assert dot_grid_colour_cosine(faint, scene, seed) > 0.99  # the grid has the dotted pattern's colour
    inverse = Image.fromarray((1.1 * np.asarray(clean, np.float32) - 0.1 * np.asarray(dotted, np.float32))
                              .clip(0, 255).round().astype(np.uint8))
    assert dot_grid_colour_cosine(inverse, scene, seed) < -0.9
    with pytest.raises(ValueError, match="plain"):
        dot_grid_contrast(dotted, replace(scene, pattern="dotted"), seed)


def test_caption_confusions_name_what_a_wrong_caption_changed():
    from dataclasses import replace

    from itc_core.tinyworld import caption, caption_confusions, generate_scene

    seed = next(s for s in range(200) if len(generate_scene(s).objects) == 2)
    scene = generate_scene(seed)
    first = scene.objects[0]
    other = "star" if first.shape != "star" else "circle"
    wrong_shape = caption(replace(scene, objects=(replace(first, shape=other), *scene.objects[1:])))
    one_object = caption(replace(scene, objects=scene.objects[:1]))
    swapped = caption(replace(scene, objects=scene.objects[::-1]))  # the true scene, objects named out of order
    found = dict(caption_confusions([caption(scene), wrong_shape, wrong_shape, one_object, "a cat", swapped],
                                    [seed] * 6))
    assert found == {f"shape {first.shape}→{other}": 2, "object missing": 1, "unparseable": 1, "other wording": 1}
