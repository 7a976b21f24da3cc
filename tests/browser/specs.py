"""What `make test-browser` does with each notebook's widgets: the one place to edit when a notebook gains one.

Every numbered notebook under notebooks/ that calls a function of ``itc_core.widgets`` needs an entry in
``NOTEBOOKS`` (``tests/test_browser_specs.py`` fails in ``make test`` otherwise), and in the browser every
control a notebook shows (slider, text field, checkbox, button, dropdown...) must be touched by some
interaction (the browser check fails otherwise).

How to add a notebook's widgets:

1. ``NOTEBOOKS["NN_name"] = Notebook(parameters={...}, widgets=(Widget(...), ...))``; ``parameters`` are
   appended to the notebook's ``parameters`` cell in the temporary copy (keep the run short).
2. ``Widget(call="explorer_function", readouts=..., interactions=...)``: ``call`` is the name of the
   ``itc_core.widgets`` function the notebook displays; the check finds the cell whose source calls it.
3. ``Readout(name, pattern=...)`` reads a number with a regex (one group) from the widget's visible text,
   optionally narrowed to a CSS ``selector`` inside the widget; ``Readout(name, image=selector)`` reads the
   SHA-256 of an image's bytes.
4. ``Interaction(control, action, value, expect)``: ``control`` is a Playwright selector inside the widget,
   ``action`` one of ``press`` (keys, e.g. ``("ArrowRight",)``), ``drag`` (a slider handle to a fraction of
   its track), ``type`` (replace the text, then leave the field), ``select`` (a dropdown option by its
   label), ``click`` (a button) or ``toggle`` (a checkbox). After it, every readout is read again until
   all ``expect`` checks hold and stay (or the check fails, printing the values before and after).
   Use ``changed``, ``unchanged``, ``increased``, ``decreased`` or ``Expect(text, function(before, after))``.

The module is plain data and functions (standard library only): both the project's environment
(the static check in ``make test``) and the small browser environment import it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

__all__ = ["Expect", "Readout", "Interaction", "Widget", "Notebook", "NOTEBOOKS",
           "changed", "unchanged", "increased", "decreased", "widget_calls", "missing_specs"]

Values = dict[str, object]
ACTIONS = ("press", "drag", "type", "select", "click", "toggle")


@dataclass(frozen=True)
class Expect:
    """One check on the readouts before and after an interaction, with the sentence the report prints."""

    text: str
    holds: Callable[[Values, Values], bool]


@dataclass(frozen=True)
class Readout:
    """A value shown by the widget: a number (``pattern``, one regex group) or an image's bytes (``image``)."""

    name: str
    pattern: str | None = None
    selector: str | None = None
    image: str | None = None

    def __post_init__(self):
        if (self.pattern is None) == (self.image is None):
            raise ValueError(f"readout {self.name!r}: give exactly one of pattern= or image=")


@dataclass(frozen=True)
class Interaction:
    """What a person does to one control and what must follow."""

    control: str
    action: str
    value: object = None
    expect: tuple[Expect, ...] = ()

    def __post_init__(self):
        if self.action not in ACTIONS:
            raise ValueError(f"unknown action {self.action!r}; use one of {ACTIONS}")
        if not self.expect:
            raise ValueError(f"interaction on {self.control!r} checks nothing: give expect=")


@dataclass(frozen=True)
class Widget:
    """A widget a notebook displays by calling ``itc_core.widgets.<call>``."""

    call: str
    readouts: tuple[Readout, ...]
    interactions: tuple[Interaction, ...]


@dataclass(frozen=True)
class Notebook:
    """The browser check of one numbered notebook."""

    widgets: tuple[Widget, ...]
    parameters: dict[str, object] = field(default_factory=dict)


def changed(name: str) -> Expect:
    """The readout ``name`` differs after the interaction."""
    return Expect(f"{name} changed", lambda b, a: a[name] != b[name])


def unchanged(name: str) -> Expect:
    """The readout ``name`` is the same after the interaction."""
    return Expect(f"{name} unchanged", lambda b, a: a[name] == b[name])


def increased(name: str) -> Expect:
    """The number ``name`` is larger after the interaction."""
    return Expect(f"{name} increased", lambda b, a: a[name] > b[name])


def decreased(name: str) -> Expect:
    """The number ``name`` is smaller after the interaction."""
    return Expect(f"{name} decreased", lambda b, a: a[name] < b[name])


# --- 00_quickstart: the quality slider -----------------------------------------------------------------
SLIDER = ".widget-slider .noUi-handle"
QUALITY_EXPLORER = Widget(
    call="quality_explorer",
    readouts=(
        Readout("quality", selector=".widget-slider .widget-readout", pattern=r"(\d+)"),
        Readout("bytes", pattern=r"(\d+) bytes"),
        Readout("bpp", pattern=r"([\d.]+) bpp"),
        Readout("original image", image=".widget-image >> nth=0"),
        Readout("decoded image", image=".widget-image >> nth=1"),
    ),
    interactions=(
        Interaction(SLIDER, "press", ("ArrowRight",), (
            Expect("quality one step up", lambda b, a: a["quality"] == b["quality"] + 1),
            increased("bytes"), increased("bpp"), changed("decoded image"), unchanged("original image"))),
        Interaction(SLIDER, "drag", 1.0, (
            Expect("quality up to the top rate point", lambda b, a: a["quality"] > b["quality"]),
            increased("bytes"), changed("decoded image"), unchanged("original image"))),
        Interaction(SLIDER, "press", ("Home",), (
            Expect("quality back to 1", lambda b, a: a["quality"] == 1),
            decreased("bytes"), decreased("bpp"), changed("decoded image"))),
    ),
)

# --- 01_caption_compression: the caption editor ----------------------------------------------------------
CAPTION_METHODS = ("utf8", "zlib", "lzma", "rank-zlib", "lm-ac", "lmm-ac")
SHORT_CAPTION = "a small red kite above the sea"  # out of the tiny world: every method, lm-ac included, costs other bits
LONG_CAPTION = "a large blue circle at the bottom left and a small yellow square in the centre on a dotted grey background"


def caption_typed(text: str) -> tuple[Expect, ...]:
    """After typing ``text``: the character count and the UTF-8 bits follow it, every method's bits change."""
    return (Expect(f"{len(text)} characters shown", lambda b, a: a["characters"] == len(text)),
            Expect("utf8 bits = 8 x characters", lambda b, a: a["utf8"] == 8 * a["characters"]),
            *(changed(m) for m in CAPTION_METHODS))


CAPTION_EDITOR = Widget(
    call="caption_editor",
    readouts=(Readout("characters", pattern=r"(\d+) characters"),
              *(Readout(m, pattern=rf"(?m)^{m}\s+(\d+)") for m in CAPTION_METHODS)),
    interactions=(
        Interaction("textarea", "type", SHORT_CAPTION, caption_typed(SHORT_CAPTION)),
        Interaction("textarea", "type", LONG_CAPTION, (*caption_typed(LONG_CAPTION), increased("utf8"), increased("zlib"))),
    ),
)

# --- 03_diffusion_decoding: the restoration explorer -------------------------------------------------------
RESTORED = ".widget-image >> nth=2"  # original, reconstruction, restored
RESTORATION_EXPLORER = Widget(
    call="restoration_explorer",
    readouts=(
        Readout("steps", selector=".widget-slider .widget-readout >> nth=0", pattern=r"(\d+)"),
        Readout("guidance", selector=".widget-slider .widget-readout >> nth=1", pattern=r"([\d.]+)"),
        Readout("distance", pattern=r"distance to the original ([\d.]+)"),
        Readout("reconstruction", image=".widget-image >> nth=1"),
        Readout("restored", image=RESTORED),
    ),
    interactions=(
        Interaction("textarea", "type", "a large blue circle at the top left on a plain yellow background",
                    (changed("restored"), unchanged("reconstruction"))),
        Interaction(".widget-slider .noUi-handle >> nth=0", "press", ("ArrowRight",), (
            Expect("one more denoising step", lambda b, a: a["steps"] == b["steps"] + 1), changed("restored"))),
        Interaction(".widget-slider .noUi-handle >> nth=1", "press", ("ArrowRight",), (
            increased("guidance"), changed("restored"))),
        Interaction(".widget-text input", "type", "7", (changed("restored"), unchanged("reconstruction"))),
        Interaction(".widget-checkbox input", "toggle", None, (changed("restored"),)),
    ),
)

# --- 04_evaluation: every method side by side at a chosen image and rate level ------------------------------
# Panels: original, then lic, lic+restorer, ours, ours-full, jpeg, webp, misc (the tiny preset runs them all).
def method_bpp(method: str) -> Readout:
    """The bpp the comparison prints under ``method``'s panel ("ours q2: 0.0654 bpp")."""
    return Readout(f"{method} bpp", pattern=rf"(?<![\w+-]){re.escape(method)} [qb]\w*: ([\d.]+) bpp")


METHOD_COMPARISON = Widget(
    call="method_comparison",
    readouts=(
        Readout("level", selector=".widget-slider .widget-readout", pattern=r"(\d+)"),
        method_bpp("lic"), method_bpp("ours"), method_bpp("jpeg"),
        Readout("original", image=".widget-image >> nth=0"),
        Readout("ours image", image=".widget-image >> nth=3"),
    ),
    interactions=(
        Interaction(SLIDER, "press", ("ArrowRight",), (
            Expect("rate level one up", lambda b, a: a["level"] == b["level"] + 1),
            increased("lic bpp"), increased("ours bpp"), increased("jpeg bpp"),
            changed("ours image"), unchanged("original"))),
        Interaction(".widget-dropdown select", "select", "scene-2000001", (
            changed("original"), changed("ours image"), unchanged("level"))),
        Interaction(SLIDER, "press", ("Home",), (
            Expect("rate level back to 1", lambda b, a: a["level"] == 1),
            decreased("ours bpp"), decreased("jpeg bpp"), changed("ours image"), unchanged("original"))),
    ),
)

NOTEBOOKS: dict[str, Notebook] = {
    "00_quickstart": Notebook(widgets=(QUALITY_EXPLORER,)),
    "01_caption_compression": Notebook(widgets=(CAPTION_EDITOR,), parameters={"N_SCENES": 4}),
    "03_diffusion_decoding": Notebook(widgets=(RESTORATION_EXPLORER,), parameters={"N_SCENES": 4}),
    "04_evaluation": Notebook(widgets=(METHOD_COMPARISON,),
                              parameters={"LIMIT": 2, "QUALITIES": [1, 2], "BOOT": 20, "GALLERY": 1}),
}


def widget_calls(notebook: dict) -> set[str]:
    """Names of the ``itc_core.widgets`` functions a notebook (parsed .ipynb JSON) calls in its code cells."""
    code = "\n".join("".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code")
    return set(re.findall(r"\bwidgets\.(\w+)\s*\(", code))


def missing_specs(notebooks: dict[str, dict]) -> list[str]:
    """One message per widget that a notebook (stem -> parsed .ipynb) displays without a spec in ``NOTEBOOKS``."""
    messages = []
    for stem, notebook in sorted(notebooks.items()):
        specified = {w.call for w in NOTEBOOKS[stem].widgets} if stem in NOTEBOOKS else set()
        messages += [f"{stem}.ipynb displays widgets.{call} but tests/browser/specs.py has no spec for it"
                     for call in sorted(widget_calls(notebook) - specified)]
    return messages
