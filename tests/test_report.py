"""What notebook 04 shows of an eval run: settings read back, tables, decoded outputs that match the stored rows."""

import json

import pytest

from itc_core import widgets
from itc_core.errors import ItcError
from itc_core.evalrun import EvalSettings, run_eval
from itc_core.report import (MethodOutputs, acceptance, bd_table, gallery_panels, load_run, not_run, rd_curves,
                             reproduces, settings_of)

SETTINGS = EvalSettings(limit=2, methods=("lic", "jpeg"), qualities=(1, 2), pillow_qualities=(10, 50), boot=10)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    run_eval(SETTINGS, out, progress=False)
    return load_run(out)


@pytest.fixture(scope="module")
def outputs(run):
    return MethodOutputs(run.settings)


def test_settings_are_read_back_from_the_folder(run):
    back = settings_of(run.folder)
    assert (back.preset, back.dataset, back.methods, back.limit, back.qualities, back.pillow_qualities, back.anchor) \
        == ("tiny", "tiny", ("lic", "jpeg"), 2, (1, 2), (10, 50), "lic")
    assert back.identity() == SETTINGS.identity()


def test_an_unfinished_folder_is_one_clear_error(tmp_path):
    (tmp_path / "run.json").write_text("{}")
    with pytest.raises(ItcError, match="no summary.json"):
        load_run(tmp_path)


def test_recomputed_outputs_match_the_stored_rows_and_a_changed_row_does_not(run, outputs):
    name = outputs.names[0]
    rows = outputs.rows(name, "lic")
    assert [r["point"] for r in rows] == ["q1", "q2"] and rows[0]["bpp"] < rows[1]["bpp"]
    assert rows[0]["decoded"].size == (64, 64) and rows[0]["reading"]
    assert reproduces(outputs, run.rows, name, "lic") and reproduces(outputs, run.rows, name, "jpeg")
    tampered = [dict(r, referee_distance=r["referee_distance"] + 0.01) if r["method"] == "lic" else r
                for r in run.rows]
    assert not reproduces(outputs, tampered, name, "lic")
    assert not reproduces(outputs, run.rows, "scene-0", "lic")  # no stored rows: nothing is reproduced


def test_levels_and_gallery_panels(outputs):
    name = outputs.names[1]
    assert outputs.levels() == 2
    low, high = outputs.at_level(name, 0), outputs.at_level(name, 5)  # past the top: each method's highest
    assert low["jpeg"]["point"] == "q10" and high["jpeg"]["point"] == "q50"
    titles = list(gallery_panels(outputs, name))
    assert titles[0] == "original" and titles[1].startswith("lic q1\n") and "bpp\nd=" in titles[1]
    with pytest.raises(ItcError, match="no image"):
        outputs.item("scene-0")


def test_curves_tables_and_what_did_not_run(run):
    summary = run.summary
    curves = rd_curves(summary, "referee_distance")
    assert set(curves) == {"lic", "jpeg"} and len(curves["lic"][0]) == 2
    assert rd_curves(summary, "lpips") == {}  # the tiny preset measures no LPIPS: no curve, not a zero one
    synthetic = {"anchor": "lic", "bd": {"psnr": {
        "ours": {"bd_rate": -41.234, "bd_rate_ci": [-50.0, -30.5], "bd_quality": 1.5, "bd_quality_ci": None},
        "jpeg": {"bd_rate": None, "bd_rate_ci": None, "bd_quality": None, "bd_quality_ci": None}}}}
    table = bd_table(synthetic)
    assert table.loc["ours", "psnr"] == "-41.2 % [-50.0, -30.5]" and table.loc["jpeg", "psnr"] == "no overlap"
    assert bd_table(synthetic, quality=True).loc["ours", "psnr"] == "+1.5 [no interval]"
    assert not_run({"means": {"lic": {}}, "missing_methods": {"ours-full": "no semantic LIC"}}, ("lic", "misc")) \
        == {"ours-full": "no semantic LIC", "misc": "not among this run's methods"}
    json.dumps(summary)  # the summary the notebook records is plain JSON


def test_method_comparison_follows_the_image_and_the_rate(outputs):
    view = widgets.method_comparison(outputs)
    (image, level), panels = view.children[0].children, view.children[1].children
    original, lic_image, lic_label = panels[0].children[1], *panels[1].children
    before = (original.value, lic_image.value, lic_label.value)
    assert "lic q1: " in lic_label.value and level.max == 2
    level.value = 2
    assert "lic q2: " in lic_label.value and lic_image.value != before[1] and original.value == before[0]
    image.value = outputs.names[1]
    assert original.value != before[0] and "lic q2: " in lic_label.value


def _summary(full_exact, bd_rate):
    lic = {"q1": {"bpp": 0.04, "referee_exact": 0.0}, "q3": {"bpp": 0.16, "referee_exact": 0.4},
           "q6": {"bpp": 0.6, "referee_exact": 0.9}}
    full = {f"q{i}": {"bpp": b, "referee_exact": e} for i, (b, e) in enumerate(zip((0.05, 0.1, 0.3), full_exact), 1)}
    bd = {"bd_rate": bd_rate, "bd_rate_ci": [bd_rate - 5, bd_rate + 5]} if bd_rate is not None else \
        {"bd_rate": None, "bd_rate_ci": None}
    return {"anchor": "lic", "images": 3, "means": {"lic": lic, "ours-full": full},
            "bd": {"referee_distance": {"ours-full": bd}}}


def test_acceptance_reports_met_and_unmet_targets():
    met = acceptance(_summary((0.5, 0.5, 0.0), -45.0))
    assert met["saves_40_percent"] is True and met["beats_exact_everywhere"] is True
    # the LIC's accuracy interpolated in log bpp; the point at 0.3 bpp is not below 0.2
    assert [round(c["lic_exact"], 3) for c in met["exact_below_bpp"]] == [0.064, 0.264]
    unmet = acceptance(_summary((0.5, 0.1, 0.0), -35.0))  # at 0.1 bpp: 0.1 exact against the LIC's 0.264
    assert unmet["saves_40_percent"] is False and unmet["beats_exact_everywhere"] is False
    unknown = acceptance(_summary((0.5, 0.5, 0.0), None), below_bpp=0.04)
    assert unknown["saves_40_percent"] is None and unknown["beats_exact_everywhere"] is None
    assert acceptance(_summary((0.5, 0.5, 0.0), -45.0), method="misc")["beats_exact_everywhere"] is None
