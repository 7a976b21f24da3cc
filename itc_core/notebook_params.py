"""The numbered notebooks' parameters, checked before any model loads: names, types and ranges, one clear error.

Every notebook under ``notebooks/`` declares its parameters in a cell tagged ``parameters`` whose first line
is ``# Parameters`` (UPPERCASE names, papermill overrides them), and checks them in the very next cell::

    from itc_core.notebook_params import check_parameters, quiet_outputs
    quiet_outputs()                                       # no progress bars or known library warnings
    params = check_parameters(globals(), "00_quickstart") # NotebookParameterError: every bad name/value at once
    OUTPUT_DIR = params["OUTPUT_DIR"]                     # relative paths resolved against the repository

What is checked, against :data:`NOTEBOOKS` (one table of rules per notebook):

- **names**: every name assigned in a cell that starts with ``# Parameters`` (the notebook's own cell and
  the ``injected-parameters`` cell papermill adds after it; read from IPython's input history) must be a
  declared parameter. ``papermill … -p quality 99`` fails here, naming ``QUALITY``; papermill itself only
  logs "Passed unknown parameter".
- **types and ranges**: ``-p QUALITY high`` fails here, not five cells later after the models have loaded.
  A rule that depends on the preset (a rate point it offers) loads only the preset's YAML.
- **paths**: a relative ``OUTPUT_DIR``, ``IMAGE``, ``RESULTS`` or ``DATASET`` folder is taken against the
  repository root, whatever the kernel's working directory (papermill's ``--cwd``, JupyterLab's notebook
  folder); :func:`check_parameters` returns them absolute.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .errors import ConfigError, ItcError

__all__ = ["Param", "NotebookParameterError", "NOTEBOOKS", "REPO_ROOT", "check_parameters", "assigned_parameters",
           "resolve_path", "quiet_outputs"]

REPO_ROOT = Path(__file__).resolve().parents[1]
HEADER = "# Parameters"  # the first line of the notebooks' parameters cells and of papermill's injected cell


class NotebookParameterError(ItcError, ValueError):
    """A notebook parameter that is unknown, missing, of the wrong type or out of range."""


@dataclass(frozen=True)
class Param:
    """One parameter's rule: ``what`` it must be (said in the error) and ``check(value, values)``, which returns
    the value to use (paths resolved) or raises ``ValueError`` with the reason."""

    what: str
    check: Callable[[Any, dict], Any]


def resolve_path(path: str | os.PathLike) -> Path:
    """``path`` made absolute: ``~`` expanded, a relative path taken against the repository root."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (REPO_ROOT / p).resolve()


# --- rules -------------------------------------------------------------------------------------------------
def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def integer(lo: int, hi: int | None = None) -> Param:
    """An integer from ``lo`` to ``hi`` (no upper bound when None)."""
    what = f"an integer {lo}-{hi}" if hi is not None else f"an integer >= {lo}"

    def check(value, values):
        if not _is_int(value) or value < lo or (hi is not None and value > hi):
            raise ValueError(f"must be {what}")
        return value
    return Param(what, check)


def number(lo: float, hi: float) -> Param:
    """A number (int or float) from ``lo`` to ``hi``."""
    what = f"a number {lo:g}-{hi:g}"

    def check(value, values):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not lo <= value <= hi:
            raise ValueError(f"must be {what}")
        return value
    return Param(what, check)


def boolean() -> Param:
    """True or False."""
    def check(value, values):
        if not isinstance(value, bool):
            raise ValueError("must be True or False")
        return value
    return Param("True or False", check)


def optional(rule: Param) -> Param:
    """None, or what ``rule`` accepts."""
    def check(value, values):
        if value is None:
            return None
        try:
            return rule.check(value, values)
        except ValueError as err:
            reason = str(err)
            raise ValueError(f"must be None or {reason.removeprefix('must be ')}" if reason.startswith("must be ")
                             else reason) from None
    return Param(f"None or {rule.what}", check)


def list_of(rule: Param, hint: str) -> Param:
    """A non-empty list whose every element ``rule`` accepts; ``hint`` is an example of the list for papermill."""
    what = f"a non-empty list, each {rule.what}"

    def check(value, values):
        if isinstance(value, str):
            raise ValueError(f"must be {what}, got the text {value!r}: papermill's -p passes text; "
                             f"pass a list with -y \"{hint}\"")
        if not isinstance(value, (list, tuple)) or not value:
            raise ValueError(f"must be {what}")
        checked = []
        for v in value:
            try:
                checked.append(rule.check(v, values))
            except ValueError as err:
                raise ValueError(f"{v!r} {err}") from None
        return checked
    return Param(what, check)


def _preset_key(value: str) -> str:
    """A preset name as it is; a preset YAML path made absolute (against the repository, as every path here)."""
    return str(resolve_path(value)) if value.endswith((".yaml", ".yml")) else value


def preset() -> Param:
    """A preset name or a preset YAML path (loaded: its own checks apply, no model is read)."""
    from .config import load_config

    def check(value, values):
        if not isinstance(value, str):
            raise ValueError("must be a preset name (tiny, laptop, paper) or a path to a preset .yaml")
        try:
            load_config(_preset_key(value))
        except ConfigError as err:
            raise ValueError(str(err)) from None
        return _preset_key(value)
    return Param("a preset name or .yaml path", check)


def _qualities(values: dict) -> list[int] | None:
    """The rate points of the notebook's preset, or None while the preset itself is bad (reported there)."""
    from .config import load_config

    try:
        return list(load_config(_preset_key(values["PRESET"])).image_codec.qualities)
    except (ConfigError, KeyError, TypeError, AttributeError):
        return None


def quality() -> Param:
    """One of the preset's LIC rate points."""
    def check(value, values):
        offered = _qualities(values)
        if offered is not None and (not _is_int(value) or value not in offered):
            raise ValueError(f"must be a rate point of preset {values['PRESET']}: one of {offered}")
        return value
    return Param("a rate point of the preset", check)


def qualities() -> Param:
    """A non-empty list of the preset's LIC rate points."""
    one = quality()
    return list_of(one, "QUALITIES: [1, 2]")


def choice(*options: str) -> Param:
    """One of ``options``."""
    what = f"one of {', '.join(options)}"

    def check(value, values):
        if value not in options:
            raise ValueError(f"must be {what}")
        return value
    return Param(what, check)


def output_dir() -> Param:
    """A folder to write into (created later by the notebook); a relative path is taken against the repository."""
    def check(value, values):
        if not isinstance(value, (str, os.PathLike)) or not str(value):
            raise ValueError("must be a folder path")
        path = resolve_path(value)
        if path.exists() and not path.is_dir():
            raise ValueError(f"{path} exists and is not a folder")
        return path
    return Param("a folder path", check)


def existing(kind: str) -> Param:
    """An existing ``file`` or ``folder``; a relative path is taken against the repository."""
    def check(value, values):
        if not isinstance(value, (str, os.PathLike)) or not str(value):
            raise ValueError(f"must be the path of a {kind}")
        path = resolve_path(value)
        if not (path.is_file() if kind == "file" else path.is_dir()):
            raise ValueError(f"{path} is not an existing {kind}")
        return path
    return Param(f"an existing {kind}", check)


def dataset() -> Param:
    """A dataset name of :func:`itc_core.data.open_dataset` or an existing folder of images."""
    from .data import DATASETS as names  # no torch: itc_core.data imports it where used

    folder = existing("folder")

    def check(value, values):
        if value in names:
            return value
        try:
            return folder.check(value, values)
        except ValueError:
            raise ValueError(f"must be one of {', '.join(names)} or an existing folder of images") from None
    return Param(f"one of {', '.join(names)} or a folder", check)


def methods() -> Param:
    """A non-empty list of ``itc eval`` methods."""
    from .evalrun import METHODS as ALL

    return list_of(choice(*ALL), "METHODS: [lic, ours]")


def anchor() -> Param:
    """An ``itc eval`` method that the notebook runs (``METHODS``; all when None)."""
    from .evalrun import METHODS as ALL

    def check(value, values):
        run = values.get("METHODS") or ALL
        if not isinstance(run, (list, tuple)) or value not in run:
            raise ValueError(f"must be one of the methods run: {', '.join(map(str, run))}")
        return value
    return Param("a method the notebook runs", check)


def pair(lo: tuple[int, int], hi: tuple[int, int]) -> Param:
    """Two integers, each in its range: a MISC point (block side, colours)."""
    def check(value, values):
        if (not isinstance(value, (list, tuple)) or len(value) != 2 or not all(map(_is_int, value))
                or not all(a <= v <= b for v, a, b in zip(value, lo, hi))):
            raise ValueError(f"must be [block {lo[0]}-{hi[0]} px, colours {lo[1]}-{hi[1]}]")
        return list(value)
    return Param("a [block, colours] pair", check)


def _rules() -> dict[str, dict[str, Param]]:
    """Each notebook's parameters, in the order of its parameters cell."""
    seed, scenes, out = integer(0, 2**31 - 1), integer(1, 10_000), output_dir()
    return {
        "00_quickstart": {"PRESET": preset(), "IMAGE": optional(existing("file")), "SCENE_SEED": seed,
                          "QUALITY": quality(), "PHOTO": boolean(), "OUTPUT_DIR": out},
        "01_caption_compression": {"PRESET": preset(), "N_SCENES": scenes, "FIRST_SEED": seed,
                                   "SELECT_BEAMS": list_of(integer(2, 64), "SELECT_BEAMS: [4]"), "OUTPUT_DIR": out},
        "02_semantic_finetuning": {"PRESET": preset(), "N_SCENES": scenes, "FINETUNE_QUALITY": quality(),
                                   "FINETUNE_STEPS": integer(1, 100_000), "SEED": seed, "OUTPUT_DIR": out},
        "03_diffusion_decoding": {"PRESET": preset(), "N_SCENES": scenes, "SHOW_SCENES": integer(0, 20),
                                  "FIRST_SEED": seed, "STEPS": optional(integer(1, 1000)),
                                  "GUIDANCE": optional(number(0, 50)), "SEED": seed, "OUTPUT_DIR": out},
        "04_evaluation": {"PRESET": preset(), "DATASET": dataset(), "LIMIT": integer(1, 100_000),
                          "METHODS": optional(methods()), "QUALITIES": optional(qualities()),
                          "PILLOW_QUALITIES": list_of(integer(0, 100), "PILLOW_QUALITIES: [5, 20, 50]"),
                          "MISC_POINTS": list_of(pair((1, 2), (255, 256)), "MISC_POINTS: [[16, 4], [8, 8]]"),
                          "ANCHOR": anchor(), "BOOT": integer(0, 100_000), "RESULTS": optional(existing("folder")),
                          "GALLERY": integer(0, 50), "OUTPUT_DIR": out},
    }


NOTEBOOKS: dict[str, dict[str, Param]] = _rules()


# --- the check ---------------------------------------------------------------------------------------------
def assigned_parameters(sources: list[str]) -> list[str]:
    """Names assigned at the top level of the cells among ``sources`` whose first line starts with ``# Parameters``
    (the notebook's parameters cell and papermill's injected one), in order, without repeats."""
    names: dict[str, None] = {}
    for source in sources:
        if not source.lstrip().startswith(HEADER):
            continue
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue  # IPython reports the cell's own syntax error
        for node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
                if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else []
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        names[name.id] = None
    return list(names)


def _unknown(name: str, declared: list[str]) -> str:
    if name.upper() in declared:
        upper = name.upper()
        return f"{name}: unknown parameter; parameters are upper-case: pass {upper} (papermill -p {upper} …)"
    close = difflib.get_close_matches(name.upper(), declared, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"{name}: unknown parameter{hint} (this notebook takes {', '.join(declared)})"


def check_parameters(namespace: dict, notebook: str) -> dict[str, Any]:
    """Check the parameters of ``notebook`` (a key of :data:`NOTEBOOKS`) in ``namespace`` (the notebook's
    ``globals()``); returns {name: value}, paths made absolute.

    Raises:
        NotebookParameterError: one message listing every unknown name (assigned in a ``# Parameters``
            cell, see :func:`assigned_parameters`), every declared name that is missing and every value of
            the wrong type or out of range.
    """
    if notebook not in NOTEBOOKS:
        raise NotebookParameterError(f"no parameter rules for notebook {notebook!r}; known: {', '.join(NOTEBOOKS)}")
    rules = NOTEBOOKS[notebook]
    declared = list(rules)
    history = [s for s in namespace.get("In", []) if isinstance(s, str)]
    problems = [_unknown(n, declared) for n in assigned_parameters(history) if n not in rules]
    problems += [f"{n}: not set; run the parameters cell first" for n in declared if n not in namespace]
    values = {n: namespace[n] for n in declared if n in namespace}
    checked = {}
    for name, value in values.items():
        try:
            checked[name] = rules[name].check(value, values)
        except ValueError as err:
            problems.append(f"{name} = {value!r}: {err}")
    if problems:
        lines = "\n".join(f"  {p}" for p in problems)
        raise NotebookParameterError(f"{notebook}: {len(problems)} bad parameter{'s' * (len(problems) > 1)}:\n{lines}")
    return checked


def quiet_outputs() -> None:
    """Keep progress bars and known, harmless library warnings out of a notebook's saved outputs.

    Every tqdm bar in this kernel is off: transformers' "Loading weights", diffusers' "Loading pipeline
    components" and the denoising bars diffusers pipelines draw (they pass ``disable=False`` themselves). A
    kernel's bars are tqdm's notebook widgets, which ignore ``TQDM_DISABLE``, so they are turned off in
    place; plain bars read ``TQDM_DISABLE`` when tqdm is first imported (call this before any model loads).
    It also ignores the ``torch.jit.script`` FutureWarning that CompressAI triggers on import. Other warnings
    still show.
    """
    os.environ["TQDM_DISABLE"] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # read by huggingface_hub, hence transformers, on import
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    try:
        from tqdm.notebook import tqdm_notebook
    except ImportError:  # no ipywidgets: bars print as text, and TQDM_DISABLE covers them
        tqdm_notebook = None
    if tqdm_notebook is not None and not getattr(tqdm_notebook, "_itc_quiet", False):
        shown = tqdm_notebook.__init__

        def quiet(self, *args, **kwargs):
            shown(self, *args, **{**kwargs, "disable": True})
        tqdm_notebook.__init__ = quiet
        tqdm_notebook._itc_quiet = True
    for name in ("transformers", "diffusers"):  # already imported (a rerun in the same kernel): tell them directly
        if name in sys.modules:
            importlib.import_module(f"{name}.utils.logging").disable_progress_bar()
