"""Notebooks: committed clean, parameters first, and every one executes under papermill with small parameters."""

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SMALL = {"01_caption_compression.ipynb": {"N_SCENES": 2, "SELECT_BEAMS": [2]},  # per-notebook parameters
         "02_semantic_finetuning.ipynb": {"N_SCENES": 2, "FINETUNE_STEPS": 3},       # that keep the suite short
         "03_diffusion_decoding.ipynb": {"N_SCENES": 2, "SHOW_SCENES": 1},
         "04_evaluation.ipynb": {"LIMIT": 1, "METHODS": ["lic", "ours", "jpeg"], "QUALITIES": [1, 2],
                                 "PILLOW_QUALITIES": [10, 50], "BOOT": 5, "GALLERY": 1}}


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs_and_parameters_first(path):
    cells = json.loads(path.read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert "parameters" in code[0].get("metadata", {}).get("tags", []), "first code cell must be tagged parameters"
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "strip outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_opens_with_what_it_teaches_and_ends_with_a_takeaway_printed_from_its_numbers(path):
    cells = json.loads(path.read_text())["cells"]
    assert cells[0]["cell_type"] == "markdown" and "**What you will learn**" in "".join(cells[0]["source"])
    titles = ["".join(c["source"]).strip() for c in cells]
    takeaway = next(i for i, t in enumerate(titles) if cells[i]["cell_type"] == "markdown" and t.endswith(". Takeaway"))
    assert cells[takeaway + 1]["cell_type"] == "code" and "print(" in titles[takeaway + 1]
    assert "metrics.json" in titles[takeaway + 3], "the key figures follow the takeaway"


@pytest.mark.slow
def test_a_bad_parameter_fails_in_the_cell_after_the_parameters_before_any_model_loads(tmp_path):
    papermill = pytest.importorskip("papermill")
    path = ROOT / "notebooks" / "00_quickstart.ipynb"
    with pytest.raises(papermill.PapermillExecutionError) as err:
        papermill.execute_notebook(str(path), str(tmp_path / path.name), parameters={"quality": 99, "QUALITY": "high"},
                                   cwd=str(path.parent), kernel_name="python3", progress_bar=False)
    assert err.value.ename == "NotebookParameterError"
    assert "quality: unknown parameter; parameters are upper-case: pass QUALITY" in err.value.evalue
    assert "QUALITY = 'high': must be a rate point of preset tiny" in err.value.evalue
    executed = json.loads((tmp_path / path.name).read_text())["cells"]
    code = [c for c in executed if c["cell_type"] == "code"]
    failed = next(i for i, c in enumerate(code) if any(o["output_type"] == "error" for o in c["outputs"]))
    assert "injected-parameters" in code[failed - 1]["metadata"]["tags"] and failed == 2  # parameters, injected, check


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_executes_with_papermill(path, tmp_path):
    papermill = pytest.importorskip("papermill")
    out_dir = tmp_path / path.stem
    parameters = {"OUTPUT_DIR": str(out_dir), **SMALL.get(path.name, {})}
    papermill.execute_notebook(str(path), str(tmp_path / path.name), parameters=parameters,
                               cwd=str(path.parent), kernel_name="python3", progress_bar=False)
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics, "the last cell records key figures"
    assert list(out_dir.glob("*.png"))
    outputs = [o for c in json.loads((tmp_path / path.name).read_text())["cells"] for o in c.get("outputs", [])]
    shown = "".join("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", "")) for o in outputs)
    assert "it/s]" not in shown and "FutureWarning" not in shown, "progress bars or library warnings in the outputs"
    if path.name == "04_evaluation.ipynb":  # every method asked for ran, and the gallery shows what was scored
        assert metrics["methods"] == ["lic", "ours", "jpeg"] and metrics["not_run"] == {}
        assert metrics["gallery_reproduces"] is True


# --- the helpers the notebooks call for their figures and sentences ----------------------------------------------
def test_moving_average_is_the_trailing_mean_and_keeps_the_length():
    from itc_core.viz import moving_average
    assert moving_average([1, 2, 3, 4, 5, 6], 3).tolist() == [1.0, 1.5, 2.0, 3.0, 4.0, 5.0]
    assert moving_average([4.0], 5).tolist() == [4.0]


def test_hbar_panels_label_every_bar_so_equal_values_read_equal():
    from itc_core.viz import hbar_panels
    fig = hbar_panels({"exact (%)": {"greedy": 95.0, "rerank": 95.0}, "bits": {"greedy": 10.0, "rerank": 10.0}})
    assert len(fig.axes) == 2
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert labels == ["95.0", "95.0"]
    grouped = hbar_panels({"exact (%)": {"LIC": {"q1": 0.0, "q2": 10.0}, "ours": {"q1": 35.0, "q2": 45.0}}})
    assert [t.get_text() for t in grouped.axes[0].get_legend().get_texts()] == ["q1", "q2"]


def test_image_grid_wraps_long_titles():
    from PIL import Image

    from itc_core.viz import image_grid
    fig = image_grid({"a large purple hexagon at the top right on a plain gray background": Image.new("RGB", (8, 8))},
                     wrap=20)
    assert max(len(line) for line in fig.axes[0].get_title().splitlines()) <= 20


def test_pillow_at_size_keeps_under_the_budget_or_says_it_cannot():
    from PIL import Image

    from itc_core.evaluate import pillow_at_size
    from itc_core.rd import pillow_round_trip
    from itc_core.tinyworld import sample
    image = sample(2_000_000)[0]
    best = pillow_at_size(image, "WEBP", 150)
    assert best["fits"] and best["bytes"] <= 150 and best["image"].size == image.size
    assert best["quality"] == 100 or pillow_round_trip(image, "WEBP", best["quality"] + 1)[0] > 150
    too_small = pillow_at_size(Image.new("RGB", (64, 64), "gray"), "WEBP", 10)  # a flat 64x64 WebP is ~60 bytes
    assert too_small["quality"] == 0 and not too_small["fits"] and too_small["bytes"] > 10


def test_curve_margins_measure_in_log_rate_and_say_none_outside_the_anchor():
    from itc_core.evaluate import curve_margins
    anchor = [{"bpp": 0.1, "psnr_db": 20.0}, {"bpp": 0.4, "psnr_db": 30.0}]
    test = [{"quality": 1, "bpp": 0.2, "psnr_db": 26.0}, {"quality": 2, "bpp": 0.05, "psnr_db": 25.0}]
    margins = curve_margins(anchor, test)
    assert margins[1] == pytest.approx(1.0)  # 0.2 bpp is half-way in log-rate: 25 dB on the anchor's curve
    assert margins[2] is None


@pytest.mark.parametrize("ci, reads", [([-80.0, -60.0], "agree on the sign"), ([-60.0, 30.0], "spans 0"),
                                       (None, "too few resamples")])
def test_bd_sentence_says_what_the_interval_settles(ci, reads):
    from itc_core.report import bd_sentence
    summary = {"anchor": "lic", "images": 6, "bd": {"referee_exact": {"ours": {"bd_rate": -12.0, "bd_rate_ci": ci}}}}
    sentence = bd_sentence(summary, "ours", "referee_exact")
    assert sentence.startswith("ours needs 12 % fewer bits than lic at equal exact-scene accuracy on 6 images")
    assert reads in sentence
    assert "no BD-rate" in bd_sentence({**summary, "bd": {}}, "ours", "referee_exact")
