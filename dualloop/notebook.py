"""What a phase notebook calls first, right after its ``parameters`` cell: ``prepare(name, globals())``.

It makes a notebook run the same way wherever it runs — executed by ``dualloop reproduce``
(papermill), by plain papermill, or top to bottom in JupyterLab:

- **Parameters** resolved by ``dualloop reproduce`` or ``dualloop parameters`` (for ``papermill -f``) name
  the notebook they were resolved for in :data:`dualloop.config.RESOLVED_FOR`; papermill injects them and
  the kernel takes them as they are (a ``-p`` value given over them replaces the whole value). Otherwise
  (JupyterLab, ``papermill -p`` alone) they resolve as ``dualloop reproduce --profile <profile>`` resolves
  them (:func:`dualloop.config.resolve_parameters`): the notebook's defaults ⊕ the profile ⊕ the phase file
  ⊕ the given values, those that differ from the ``parameters`` cell's defaults (an edit in the cell, a
  ``-p`` value; one equal to the cell's default cannot be told from it, so the profile's value stands: give
  it with ``dualloop parameters --set``). Like ``--set``, a given mapping merges key by key into the
  profile's. ``output_dir``, unless given, is ``runs/<profile>`` of the repository, and the working
  directory is the repository root, as under ``dualloop reproduce``. Either way the values are then checked
  as ``reproduce`` checks a phase's before it starts (:func:`dualloop.pipeline.validate_phase`).
- **Figures** (``matplotlib.figure.Figure``, built without pyplot) display inline as PNG when a cell
  shows them (``display(figure)`` or ``figure`` last).
- **Library noise** is off: hub, transformers and datasets progress bars (the phase prints its own
  progress lines), and the known deprecation warnings of :data:`KNOWN_WARNINGS`, each filtered by its
  message and the module that emits it.
"""

from __future__ import annotations

import ast
import os
import sys
import warnings
from collections.abc import Mapping, MutableMapping
from typing import Any

from dualloop.config import (
    REPO_ROOT,
    RESOLVED_FOR,
    ParamsError,
    declared_parameters,
    default_output_dir,
    resolve_parameters,
)
from dualloop.pipeline import discover_phases, validate_phase

__all__ = ["KNOWN_WARNINGS", "prepare", "quiet", "resolve", "show_figures_inline"]

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
PARAMS_DIR = REPO_ROOT / "params"
# (message regex, category, emitting module regex): deprecations inside the libraries, not in dualloop's calls
KNOWN_WARNINGS = (
    # TRL's DPOConfig defaults gradient_checkpointing=True, a field transformers renamed
    (r"`gradient_checkpointing` is deprecated", FutureWarning, r"transformers\.training_args"),
    # read by TRL's disable_gradient_checkpointing and by PEFT when it wraps a model
    (r"`is_gradient_checkpointing` is deprecated", FutureWarning, r"transformers\.modeling_utils"),
    # tqdm.auto imported in a kernel without ipywidgets; progress bars are off (see quiet)
    (r"IProgress not found", Warning, r"tqdm\.auto"),
)
_PROGRESS_ENVIRONMENT = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}


def quiet() -> None:
    """Progress bars of huggingface_hub, transformers and datasets off; :data:`KNOWN_WARNINGS` ignored.

    The environment variables cover libraries imported later; libraries already imported are told directly."""
    for message, category, module in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    os.environ.update(_PROGRESS_ENVIRONMENT)
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].utils.disable_progress_bars()
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()
    if "datasets" in sys.modules:
        sys.modules["datasets"].disable_progress_bars()


def show_figures_inline() -> None:
    """Display ``matplotlib.figure.Figure`` objects as PNG in the running IPython kernel (none: nothing to do)."""
    from IPython import get_ipython
    from IPython.core.pylabtools import select_figure_formats

    shell = get_ipython()
    if shell is not None:
        select_figure_formats(shell, {"png"}, bbox_inches="tight")


def resolve(notebook: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters of ``notebooks/<notebook>.ipynb`` as ``dualloop reproduce`` resolves them.

    The notebook declares ``profile`` and ``output_dir``. ``values`` holds the parameters as they are now
    (the notebook's globals); those that differ from the parameters cell's defaults are the given ones:
    they take the place of ``--set`` and of the runner's profile and folder.
    """
    path = NOTEBOOKS_DIR / f"{notebook}.ipynb"
    declared = declared_parameters(path)
    defaults = {name: ast.literal_eval(entry["default"]) for name, entry in declared.items()}
    given = {name: values[name] for name in declared if name in values and values[name] != defaults[name]}
    profile = given.get("profile", defaults["profile"])
    every_key = set().union(*(declared_parameters(phase.notebook) for phase in discover_phases(NOTEBOOKS_DIR)))
    overrides = {name: value for name, value in given.items() if name not in ("profile", "output_dir")}
    resolved = {
        **defaults,
        **resolve_parameters(path, profile, params_dir=PARAMS_DIR, overrides=overrides, profile_keys=every_key),
    }
    resolved["output_dir"] = given.get("output_dir", str(default_output_dir(profile)))
    resolved["profile"] = profile
    return resolved


def prepare(notebook: str, namespace: MutableMapping[str, Any]) -> None:
    """Quiet the libraries, show figures inline, work in the repository root and, unless they were resolved
    for this notebook already (:data:`~dualloop.config.RESOLVED_FOR`), replace the notebook's parameters in
    ``namespace`` (its ``globals()``) by :func:`resolve`'s. Either way the values are then checked as
    ``dualloop reproduce`` checks them before a phase (a ``papermill -p`` value over a resolved file too)."""
    quiet()
    show_figures_inline()
    os.chdir(REPO_ROOT)
    resolved_for = namespace.get(RESOLVED_FOR) or ""
    if resolved_for and resolved_for != notebook:
        raise ParamsError(
            f"{RESOLVED_FOR} {resolved_for!r}: these parameters were resolved for notebooks/{resolved_for}.ipynb, "
            f"not {notebook}; resolve this phase's with `dualloop parameters --profile <profile> --phase {int(notebook[:2])}`"
        )
    if not resolved_for:  # JupyterLab, or papermill -p alone: resolved here
        resolved = resolve(notebook, namespace)
        namespace.update(resolved)
        print(
            f"{notebook}: the parameters of profile {resolved['profile']!r} as `dualloop reproduce` resolves them, "
            f"with the values given; output in {resolved['output_dir']}"
        )
    [phase] = [phase for phase in discover_phases(NOTEBOOKS_DIR) if phase.notebook.stem == notebook]
    validate_phase(phase, {name: namespace[name] for name in declared_parameters(phase.notebook) if name in namespace})
