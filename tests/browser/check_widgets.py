"""Prove the notebooks' widgets respond in a real browser: `make test-browser` runs this.

Copies the numbered notebooks that have a spec (tests/browser/specs.py) to a temporary folder, starts a
private JupyterLab from the project's environment, opens each notebook in headless Chromium (Debian's,
driven by Playwright), runs all cells from the Run menu, then drives every widget as a person would and
checks what it shows afterwards (numbers read from the page, image bytes). Screenshots before and after
each interaction and report.json go to outputs/browser/. Exit status 0: every check held.

    .venv-browser/bin/python tests/browser/check_widgets.py [--notebooks 00_quickstart ...]
    .venv-browser/bin/python tests/browser/check_widgets.py --negative-control

``--negative-control`` runs the same check with JupyterLab's widget extension disabled; it succeeds only if
the check then fails because the widgets are not rendered (a test of the test).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Locator, Page, sync_playwright

from jupyterlab import ServerError, jupyterlab
from specs import NOTEBOOKS, Interaction, Notebook, Readout, Widget, missing_specs

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
WIDGET_VIEW = ".jp-OutputArea-output > .jupyter-widgets"  # the root element of a displayed widget
CONTROLS = "input, textarea, select, button, .noUi-handle"
NOT_RENDERED = "not rendered"


class CheckFailed(Exception):
    """A notebook or widget did not behave; ``reason`` names the kind of failure."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason


def copy_notebook(source: Path, target_dir: Path, spec: Notebook, output_dir: Path) -> None:
    """Copy a notebook, appending the spec's parameters (and an OUTPUT_DIR in the temp folder) to its parameters cell."""
    nb = json.loads(source.read_text())
    params = {"OUTPUT_DIR": str(output_dir / source.stem), **spec.parameters}
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    lines = "".join(cell["source"]).rstrip("\n") + "\n# set by the browser check\n"
    cell["source"] = lines + "".join(f"{k} = {v!r}\n" for k, v in params.items())
    (target_dir / source.name).write_text(json.dumps(nb))


def open_notebook(page: Page, url: str, name: str, code_cells: int, timeout_s: float) -> None:
    """Open a notebook and wait until all its code cells are on the page and its kernel is idle."""
    page.goto(f"{url}/lab/tree/{name}.ipynb?reset")  # reset: a fresh workspace, not the previous notebook's tab
    page.wait_for_function(
        """n => document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell').length === n
               && /\\|\\s*Idle/.test(document.querySelector('.jp-StatusBar-Widget')?.innerText || '')""",
        arg=code_cells, timeout=timeout_s * 1000)


def run_all_cells(page: Page, name: str, timeout_s: float) -> float:
    """Run > Run All Cells, then wait for every code cell to have an execution count; returns the seconds taken."""
    start = time.monotonic()
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    last, since = None, time.monotonic()
    while time.monotonic() - start < timeout_s:
        prompts = [p.strip() for p in page.locator(".jp-NotebookPanel .jp-CodeCell .jp-InputPrompt").all_inner_texts()]
        if all(re.fullmatch(r"\[\d+\]:", p) for p in prompts):
            return time.monotonic() - start
        if prompts != last:
            last, since = prompts, time.monotonic()
        elif "[*]:" not in prompts and time.monotonic() - since > 10:  # nothing queued, not all run: a cell raised
            errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
                                  has_text="Error")
            detail = errors.last.inner_text()[-600:] if errors.count() else "no error output"
            raise CheckFailed("cell error", f"{name}: run stopped at prompts {prompts}: {detail}")
        time.sleep(1)
    raise CheckFailed("timeout", f"{name}: cells still running after {timeout_s:.0f} s")


def find_widget(page: Page, name: str, call: str) -> Locator:
    """The rendered widget of the code cell that calls ``widgets.<call>(``; fails if the page shows no widget there."""
    cells = page.locator(".jp-NotebookPanel .jp-CodeCell")
    sources = cells.locator(".jp-InputArea .cm-content").all_inner_texts()
    index = next((i for i, s in enumerate(sources) if re.search(rf"\bwidgets\.{call}\s*\(", s)), None)
    if index is None:
        raise CheckFailed("no cell", f"{name}: no code cell calls widgets.{call}(...)")
    cell = cells.nth(index)
    view = cell.locator(WIDGET_VIEW).last  # the display call is the cell's last output
    try:
        view.wait_for(state="visible", timeout=30_000)
    except Exception:
        shown = cell.locator(".jp-OutputArea").inner_text()[:200].replace("\n", " ")
        raise CheckFailed(NOT_RENDERED, f"{name}: widgets.{call} shows no widget; the output reads {shown!r}") from None
    return view


def read(widget: Locator, readouts: tuple[Readout, ...]) -> dict[str, object]:
    """Every readout's current value (numbers from the visible text, SHA-256 prefixes of image bytes); None if absent."""
    values: dict[str, object] = {}
    for r in readouts:
        if r.image is not None:
            values[r.name] = widget.locator(r.image).first.evaluate(
                """async img => {
                    const bytes = await (await fetch(img.src)).arrayBuffer();
                    const hash = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
                    return Array.from(hash.slice(0, 8), b => b.toString(16).padStart(2, '0')).join('');
                }""")
            continue
        text = widget.locator(r.selector).first.inner_text() if r.selector else widget.inner_text()
        match = re.search(r.pattern, text)
        values[r.name] = None if match is None else _number(match.group(1))
    return values


def _number(text: str) -> int | float:
    return int(text) if text.isdigit() else float(text)


def act(page: Page, control: Locator, interaction: Interaction) -> None:
    """Do what a person would: press keys, drag a slider handle, type and leave the field, pick, click."""
    action, value = interaction.action, interaction.value
    if action == "press":
        for key in value:
            control.press(key)
    elif action == "drag":
        handle = control.bounding_box()
        track = control.locator("xpath=ancestor::*[contains(@class,'noUi-target')][1]").bounding_box()
        x0, y = handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2
        page.mouse.move(x0, y)
        page.mouse.down()
        page.mouse.move(track["x"] + value * track["width"], y, steps=10)
        page.mouse.up()
    elif action == "type":
        control.click()
        control.press("ControlOrMeta+a")
        control.press_sequentially(value, delay=5)
        control.blur()
    elif action == "select":
        control.select_option(label=value)
    else:  # click, toggle
        control.click()
    control.evaluate("e => e.closest('.lm-Widget').dataset.itcExercised = '1'")  # the control's own view


def settle(widget: Locator, spec: Widget, interaction: Interaction, before: dict, timeout_s: float) -> dict:
    """Read the readouts until every expectation of the interaction holds and stays; fail with before/after if not."""
    deadline, after, failed = time.monotonic() + timeout_s, {}, []
    while time.monotonic() < deadline:
        after = read(widget, spec.readouts)
        failed = [e.text for e in interaction.expect if not _holds(e, before, after)]
        if not failed:
            time.sleep(1)  # and still so a moment later: the widget has settled, not passed through
            if read(widget, spec.readouts) == after:
                return after
        time.sleep(0.5)
    raise CheckFailed("no response", f"widgets.{spec.call}: {interaction.action} {interaction.value!r} on "
                      f"{interaction.control!r}: not {failed or 'settled'}; before {before}, after {after}")


def _holds(expect, before, after) -> bool:
    try:
        return bool(expect.holds(before, after))
    except (TypeError, KeyError):  # a readout missing from the page
        return False


def unexercised_controls(page: Page) -> list[str]:
    """Widget controls on the page that no interaction touched (each named by its classes and label)."""
    return page.evaluate(
        """([views, controls]) => {
            const missed = new Set();
            for (const view of document.querySelectorAll(views))
                for (const el of view.querySelectorAll(controls)) {
                    const w = el.closest('.lm-Widget');
                    if (w && !w.dataset.itcExercised) {
                        const label = w.querySelector('.widget-label')?.innerText || el.tagName.toLowerCase();
                        missed.add(`${[...w.classList].filter(c => c.startsWith('widget-')).join(' ')} '${label}'`);
                    }
                }
            return [...missed];
        }""", [WIDGET_VIEW, CONTROLS])


def check_notebook(page: Page, url: str, name: str, spec: Notebook, code_cells: int, shots: Path,
                   timeout_s: float) -> dict:
    """Open, run and drive one notebook's widgets; returns its report entry."""
    open_notebook(page, url, name, code_cells, timeout_s)
    entry = {"notebook": name, "run_s": round(run_all_cells(page, name, timeout_s), 1), "widgets": []}
    print(f"{name}: all {code_cells} code cells ran in {entry['run_s']} s", flush=True)
    for spec_widget in spec.widgets:
        widget = find_widget(page, name, spec_widget.call)
        values = read(widget, spec_widget.readouts)
        if missing := [k for k, v in values.items() if v is None]:
            raise CheckFailed("no readout", f"{name}: widgets.{spec_widget.call} shows no {missing}")
        steps = []
        for i, interaction in enumerate(spec_widget.interactions, 1):
            stem = shots / f"{name}-{spec_widget.call}-{i}"
            widget.screenshot(path=f"{stem}-before.png")
            act(page, widget.locator(interaction.control).first, interaction)
            after = settle(widget, spec_widget, interaction, values, timeout_s=60)
            widget.screenshot(path=f"{stem}-after.png")
            steps.append({"action": interaction.action, "value": interaction.value, "control": interaction.control,
                          "before": values, "after": after, "checked": [e.text for e in interaction.expect]})
            print(f"  widgets.{spec_widget.call} #{i}: {interaction.action} {interaction.value!r}: "
                  f"{_diff(values, after)}; ok: {', '.join(e.text for e in interaction.expect)}", flush=True)
            values = after
        entry["widgets"].append({"call": spec_widget.call, "interactions": steps})
    if missed := unexercised_controls(page):
        raise CheckFailed("no spec", f"{name}: controls without an interaction in tests/browser/specs.py: {missed}")
    return entry


def _diff(before: dict, after: dict) -> str:
    return ", ".join(f"{k} {before[k]} -> {after[k]}" for k in before if not isinstance(before[k], str)) + \
        "".join(f", {k} {'changed' if before[k] != after[k] else 'same'}" for k in before if isinstance(before[k], str))


def numbered_notebooks(names: list[str] | None) -> list[Path]:
    """The numbered notebooks to check; fails for one that shows widgets but has no spec."""
    paths = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if missing := missing_specs({p.stem: json.loads(p.read_text()) for p in paths}):
        raise CheckFailed("no spec", "; ".join(missing))
    chosen = [p for p in paths if p.stem in NOTEBOOKS and (not names or p.stem in names)]
    if names and len(chosen) != len(names):
        raise CheckFailed("no spec", f"unknown or spec-less notebooks in {names}")
    return chosen


def run_check(args: argparse.Namespace, widgets: bool, shots: Path) -> list[dict]:
    """The whole check: temp copies, JupyterLab, Chromium, every spec'd notebook; raises CheckFailed."""
    notebooks = numbered_notebooks(args.notebooks)
    with tempfile.TemporaryDirectory(prefix="itc-browser-") as tmp:
        root = Path(tmp) / "notebooks"
        root.mkdir()
        for path in notebooks:
            copy_notebook(path, root, NOTEBOOKS[path.stem], Path(tmp) / "outputs")
        env = {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        with jupyterlab(args.jupyter, root, shots / "jupyterlab.log", widgets=widgets, env=env) as url, \
                sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(args.chromium), args=CHROMIUM_FLAGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 1000})
                page.set_default_timeout(60_000)
                report = []
                for path in notebooks:
                    code_cells = sum(c["cell_type"] == "code" for c in json.loads(path.read_text())["cells"])
                    try:
                        report.append(check_notebook(page, url, path.stem, NOTEBOOKS[path.stem], code_cells,
                                                     shots, args.timeout))
                    except Exception:
                        page.screenshot(path=str(shots / f"{path.stem}-FAILED.png"), full_page=True)
                        raise
                return report
            finally:
                browser.close()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jupyter", type=Path, default=ROOT / ".venv" / "bin" / "jupyter", help="the project's jupyter")
    p.add_argument("--chromium", type=Path, default=Path("/usr/lib/chromium/chromium"), help="Chromium binary")
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "browser", help="screenshots and report.json")
    p.add_argument("--notebooks", nargs="*", help="notebook stems (default: every numbered notebook with a spec)")
    p.add_argument("--timeout", type=float, default=600, help="seconds per notebook run")
    p.add_argument("--negative-control", action="store_true", help="disable the widget extension: must fail")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for exe, what in ((args.jupyter, "the project's jupyter (run make env)"), (args.chromium, "Chromium")):
        if not exe.exists():
            print(f"itc: error: {exe} not found: {what}", file=sys.stderr)
            return 2
    shots = args.out / "negative-control" if args.negative_control else args.out
    shots.mkdir(parents=True, exist_ok=True)
    for old in shots.glob("*.*"):  # files of the previous run (not the negative control's folder)
        old.unlink()
    start = time.monotonic()
    try:
        report = run_check(args, widgets=not args.negative_control, shots=shots)
    except CheckFailed as failure:
        if args.negative_control and failure.reason == NOT_RENDERED:
            print(f"negative control OK: without the widget extension the check fails: {failure}")
            return 0
        print(f"browser check FAILED ({time.monotonic() - start:.0f} s): {failure}", file=sys.stderr)
        return 1
    except (ServerError, PlaywrightError) as error:  # the set-up broke (screenshots in shots/ if a page was open)
        print(f"browser check FAILED ({time.monotonic() - start:.0f} s): {str(error).splitlines()[0]}",
              file=sys.stderr)
        return 1
    if args.negative_control:
        print("negative control FAILED: the check passed with the widget extension disabled", file=sys.stderr)
        return 1
    (shots / "report.json").write_text(json.dumps(report, indent=2))
    widgets = [w for entry in report for w in entry["widgets"]]
    print(f"browser check passed in {time.monotonic() - start:.0f} s: {sum(len(w['interactions']) for w in widgets)} "
          f"interactions on {len(widgets)} widgets in {len(report)} notebooks; screenshots and report.json in {shots}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
