"""``itc_core.notebook_params``: every notebook's parameters checked by name, type and range, in one clear error."""

import json
import os
from pathlib import Path

import pytest

from itc_core.notebook_params import (NOTEBOOKS, REPO_ROOT, NotebookParameterError, assigned_parameters,
                                      check_parameters, quiet_outputs, resolve_path)

ROOT = Path(__file__).resolve().parents[1]
PATHS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def parameters_source(path: Path) -> str:
    return "".join(next(c for c in cells(path) if "parameters" in c["metadata"].get("tags", []))["source"])


def defaults(path: Path) -> dict:
    """The namespace a kernel has after running the notebook's parameters cell (its history in ``In``)."""
    source = parameters_source(path)
    namespace = {"In": ["", source]}
    exec(source, {}, namespace)  # the cell holds constants only
    return namespace


def injected(namespace: dict, **values) -> dict:
    """``namespace`` after papermill's injected-parameters cell setting ``values``."""
    cell = "# Parameters\n" + "".join(f"{k} = {v!r}\n" for k, v in values.items())
    return {**namespace, **values, "In": [*namespace["In"], cell]}


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_every_notebook_declares_exactly_its_rules_and_its_defaults_pass(path):
    namespace = defaults(path)
    assert path.stem in NOTEBOOKS, f"itc_core/notebook_params.py has no rules for {path.stem}"
    assert assigned_parameters(namespace["In"]) == list(NOTEBOOKS[path.stem])
    assert set(check_parameters(namespace, path.stem)) == set(NOTEBOOKS[path.stem])


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_every_notebook_checks_its_parameters_in_the_next_cell_before_any_import_of_a_model(path):
    code = [c for c in cells(path) if c["cell_type"] == "code"]
    check = "".join(code[1]["source"])
    assert f'check_parameters(globals(), "{path.stem}")' in check and "quiet_outputs()" in check
    assert "import" not in check.replace("from itc_core.notebook_params import", "")
    assert parameters_source(path).startswith("# Parameters")


def test_an_unknown_name_fails_and_a_lower_case_alias_names_the_upper_case_parameter():
    namespace = injected(defaults(ROOT / "notebooks" / "00_quickstart.ipynb"), quality=99, QUALTY=2)
    with pytest.raises(NotebookParameterError) as err:
        check_parameters(namespace, "00_quickstart")
    message = str(err.value)
    assert "2 bad parameters" in message
    assert "quality: unknown parameter; parameters are upper-case: pass QUALITY" in message
    assert "QUALTY: unknown parameter; did you mean QUALITY?" in message


@pytest.mark.parametrize("stem, values, expected", [
    ("00_quickstart", {"QUALITY": "high"}, "QUALITY = 'high': must be a rate point of preset tiny: one of [1, 2,"),
    ("00_quickstart", {"QUALITY": 11}, "must be a rate point of preset tiny"),
    ("00_quickstart", {"PHOTO": "yes"}, "PHOTO = 'yes': must be True or False"),
    ("00_quickstart", {"IMAGE": "no/such.png"}, "is not an existing file"),
    ("00_quickstart", {"PRESET": "tinyy"}, "PRESET = 'tinyy': unknown preset 'tinyy'"),
    ("01_caption_compression", {"N_SCENES": 0}, "N_SCENES = 0: must be an integer 1-10000"),
    ("01_caption_compression", {"N_SCENES": True}, "must be an integer"),
    ("01_caption_compression", {"SELECT_BEAMS": "[2]"}, 'pass a list with -y "SELECT_BEAMS: [4]"'),
    ("02_semantic_finetuning", {"FINETUNE_STEPS": 2.5}, "FINETUNE_STEPS = 2.5: must be an integer"),
    ("03_diffusion_decoding", {"GUIDANCE": "strong"}, "GUIDANCE = 'strong': must be None or a number 0-50"),
    ("04_evaluation", {"METHODS": ["lic", "ourz"]}, "METHODS = ['lic', 'ourz']: 'ourz' must be one of lic, lic+"),
    ("04_evaluation", {"ANCHOR": "webp", "METHODS": ["lic", "ours"]}, "must be one of the methods run: lic, ours"),
    ("04_evaluation", {"QUALITIES": [1, 20]}, "QUALITIES = [1, 20]: 20 must be a rate point of preset tiny"),
    ("04_evaluation", {"MISC_POINTS": [[16, 1]]}, "[16, 1] must be [block 1-255 px, colours 2-256]"),
    ("04_evaluation", {"DATASET": "imagenet"}, "must be one of tiny, sample-photo, kodak or an existing folder"),
])
def test_a_bad_type_or_range_fails_with_the_parameter_and_the_rule(stem, values, expected):
    namespace = injected(defaults(ROOT / "notebooks" / f"{stem}.ipynb"), **values)
    with pytest.raises(NotebookParameterError, match="1 bad parameter:") as err:
        check_parameters(namespace, stem)
    assert expected in str(err.value)


def test_a_bad_preset_is_reported_once_not_again_through_the_rate_points_it_would_offer():
    namespace = injected(defaults(ROOT / "notebooks" / "00_quickstart.ipynb"), PRESET="nope", QUALITY=3)
    with pytest.raises(NotebookParameterError, match="1 bad parameter:"):
        check_parameters(namespace, "00_quickstart")


def test_a_parameter_that_was_never_set_is_named():
    namespace = defaults(ROOT / "notebooks" / "03_diffusion_decoding.ipynb")
    del namespace["STEPS"]
    with pytest.raises(NotebookParameterError, match="STEPS: not set; run the parameters cell first"):
        check_parameters(namespace, "03_diffusion_decoding")


def test_relative_paths_are_taken_against_the_repository_whatever_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = injected(defaults(ROOT / "notebooks" / "00_quickstart.ipynb"), IMAGE="itc_core/__init__.py")
    checked = check_parameters(namespace, "00_quickstart")
    assert checked["OUTPUT_DIR"] == REPO_ROOT / "outputs" / "00_quickstart"
    assert checked["IMAGE"] == REPO_ROOT / "itc_core" / "__init__.py"
    assert resolve_path(tmp_path / "x") == tmp_path / "x"  # absolute paths as they are
    assert check_parameters(injected(namespace, OUTPUT_DIR=str(tmp_path)), "00_quickstart")["OUTPUT_DIR"] == tmp_path


def test_names_come_only_from_parameters_cells():
    sources = ["", "# Parameters (papermill overrides these)\nA = 1\nB: int = 2  # typed\n",
               "x = 5\nQUALITY = 3", "# Parameters\nquality = 99\nA = 4\n", "# Parameters\nnot python("]
    assert assigned_parameters(sources) == ["A", "B", "quality"]


def test_unknown_notebook_is_refused():
    with pytest.raises(NotebookParameterError, match="no parameter rules for notebook '99_x'"):
        check_parameters({}, "99_x")


def test_quiet_outputs_turns_every_kernel_progress_bar_off(monkeypatch):
    tqdm_notebook = pytest.importorskip("tqdm.notebook").tqdm_notebook
    monkeypatch.setattr(tqdm_notebook, "__init__", tqdm_notebook.__init__)  # undone after the test
    monkeypatch.delattr(tqdm_notebook, "_itc_quiet", raising=False)
    monkeypatch.setenv("TQDM_DISABLE", "")  # restored after the test, as the next one
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "")
    quiet_outputs()
    quiet_outputs()  # twice: the default is changed once
    assert tqdm_notebook(range(2)).disable
    assert tqdm_notebook(range(2), disable=False).disable  # as diffusers' pipelines ask


def test_a_relative_preset_yaml_is_taken_against_the_repository(tmp_path, monkeypatch):
    (tmp_path / "mine.yaml").write_text("base: tiny\nimage_codec: {qualities: [1, 2], quality: 1}\n")
    monkeypatch.chdir(tmp_path)  # the same relative path from here would name another file
    relative = os.path.relpath(tmp_path / "mine.yaml", REPO_ROOT)
    namespace = injected(defaults(ROOT / "notebooks" / "00_quickstart.ipynb"), PRESET=relative, QUALITY=2)
    assert check_parameters(namespace, "00_quickstart")["PRESET"] == str(tmp_path / "mine.yaml")
    with pytest.raises(NotebookParameterError,
                       match=r"QUALITY = 3: must be a rate point of preset \S*mine.yaml: one of \[1, 2\]"):
        check_parameters(injected(namespace, QUALITY=3), "00_quickstart")
