"""The browser check (`make test-browser`) has a spec for every widget the numbered notebooks display.

The check itself needs Chromium and runs outside pytest; these fast checks keep its specs honest in `make test`.
"""

import json
from pathlib import Path

import pytest

from itc_core import widgets
from tests.browser import jupyterlab
from tests.browser.specs import NOTEBOOKS, missing_specs, widget_calls

ROOT = Path(__file__).resolve().parents[1]
PATHS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def notebook(*sources: str) -> dict:
    return {"cells": [{"cell_type": "code", "source": s, "metadata": {}} for s in sources]}


def test_every_widget_of_every_numbered_notebook_has_a_spec():
    assert missing_specs({p.stem: json.loads(p.read_text()) for p in PATHS}) == []


def test_a_new_notebook_with_a_widget_and_no_spec_is_caught():
    new = notebook("x = 1", "display(widgets.restoration_explorer(codec, image))")
    assert widget_calls(new) == {"restoration_explorer"}
    assert missing_specs({"99_new": new}) == ["99_new.ipynb displays widgets.restoration_explorer but "
                                              "tests/browser/specs.py has no spec for it"]
    assert missing_specs({"99_new": notebook("print(widgets)", "import ipywidgets")}) == []


@pytest.mark.parametrize("stem", sorted(NOTEBOOKS))
def test_specs_name_real_notebooks_widgets_and_parameters(stem):
    path = ROOT / "notebooks" / f"{stem}.ipynb"
    assert path.exists(), f"tests/browser/specs.py names {stem}, which is not a notebook"
    nb = json.loads(path.read_text())
    for spec in NOTEBOOKS[stem].widgets:
        assert spec.call in widgets.__all__ and spec.call in widget_calls(nb), spec.call
    params = "".join(next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))["source"])
    for name in NOTEBOOKS[stem].parameters:
        assert f"\n{name} =" in f"\n{params}", f"{name} is not a parameter of {stem}"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_notebooks_take_widgets_from_itc_core_only(path):
    code = "".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
    assert "ipywidgets" not in code and "interact(" not in code, "display widgets from itc_core.widgets (specs see them)"


@pytest.mark.parametrize("widgets_on", [True, False])
def test_jupyterlab_config_is_private_and_the_control_disables_widgets(tmp_path, widgets_on):
    env = jupyterlab._write_config(tmp_path, widgets=widgets_on)
    assert all(Path(v).is_relative_to(tmp_path) for v in env.values())
    news = tmp_path / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    assert json.loads(news.read_text())["fetchNews"] == "false"
    page_config = tmp_path / "config" / "labconfig" / "page_config.json"
    assert page_config.exists() is not widgets_on
    if not widgets_on:
        assert json.loads(page_config.read_text())["disabledExtensions"] == {jupyterlab.WIDGET_EXTENSION: True}


def test_ci_and_readme_run_the_browser_check():
    assert "make test-browser" in (ROOT / ".ci" / "run").read_text()
    assert "\ntest-browser:" in (ROOT / "Makefile").read_text()
    assert "make test-browser" in (ROOT / "README.md").read_text()


def test_a_spec_must_check_something_and_read_one_kind_of_value():
    from tests.browser.specs import Interaction, Readout, changed
    with pytest.raises(ValueError, match="checks nothing"):
        Interaction("textarea", "type", "a caption")
    with pytest.raises(ValueError, match="unknown action"):
        Interaction("textarea", "shake", None, (changed("bits"),))
    with pytest.raises(ValueError, match="exactly one"):
        Readout("bits", pattern=r"(\d+)", image="img")
