"""What a phase notebook calls first, right after its ``parameters`` cell: ``prepare(name, globals())``.

It makes a notebook run the same way wherever it runs — executed by ``dualloop reproduce``
(papermill), by plain papermill, or top to bottom in JupyterLab:

- **Parameters** under ``dualloop reproduce`` are the ones it resolved and papermill injected, taken
  as they are (the runner names the notebook in :data:`dualloop.pipeline.RESOLVED_ENV`); elsewhere
  they resolve as ``dualloop reproduce --profile <profile>`` resolves them
  (:func:`dualloop.config.resolve_parameters`): the notebook's defaults ⊕ the profile ⊕ the phase
  file ⊕ what was given. Given values are those papermill injected and those edited in the
  ``parameters`` cell (a value that differs from the cell's default); like ``--set``, a given mapping
  merges key by key into the profile's. ``output_dir``, unless given, is ``runs/<profile>`` of the
  repository, and the working directory is the repository root, as under ``dualloop reproduce``.
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

from dualloop.config import REPO_ROOT, declared_parameters, resolve_parameters
from dualloop.pipeline import RESOLVED_ENV, discover_phases

__all__ = ["INJECTED_HEADER", "KNOWN_WARNINGS", "injected_names", "prepare", "quiet", "resolve", "show_figures_inline"]

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
PARAMS_DIR = REPO_ROOT / "params"
INJECTED_HEADER = "# Parameters"  # the first line of the cell papermill injects after the parameters cell
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


def injected_names(inputs: list[str]) -> set[str] | None:
    """The parameter names papermill injected, read from the cells run so far (IPython's ``In``);
    None when no cell was injected (run in JupyterLab or as a script)."""
    for source in reversed(inputs):
        if source.splitlines()[:1] == [INJECTED_HEADER]:
            return {
                target.id
                for node in ast.parse(source).body
                if isinstance(node, ast.Assign)
                for target in node.targets
                if isinstance(target, ast.Name)
            }
    return None


def resolve(notebook: str, values: Mapping[str, Any], injected: set[str] | None = None) -> dict[str, Any]:
    """The parameters of ``notebooks/<notebook>.ipynb`` as ``dualloop reproduce`` resolves them.

    The notebook declares ``profile`` and ``output_dir``. ``values`` holds the parameters as they are now
    (the notebook's globals); those named in ``injected`` and those that differ from the parameters cell's
    defaults are the given ones: they take the place of ``--set`` and of the runner's profile and folder.
    """
    path = NOTEBOOKS_DIR / f"{notebook}.ipynb"
    declared = declared_parameters(path)
    defaults = {name: ast.literal_eval(entry["default"]) for name, entry in declared.items()}
    given = {
        name: values[name]
        for name in declared
        if name in values and (name in (injected or set()) or values[name] != defaults[name])
    }
    profile = given.get("profile", defaults["profile"])
    every_key = set().union(*(declared_parameters(phase.notebook) for phase in discover_phases(NOTEBOOKS_DIR)))
    overrides = {name: value for name, value in given.items() if name not in ("profile", "output_dir")}
    resolved = {
        **defaults,
        **resolve_parameters(path, profile, params_dir=PARAMS_DIR, overrides=overrides, profile_keys=every_key),
    }
    resolved["output_dir"] = given.get("output_dir", str(REPO_ROOT / "runs" / profile))
    resolved["profile"] = profile
    return resolved


def prepare(notebook: str, namespace: MutableMapping[str, Any]) -> None:
    """Quiet the libraries, show figures inline, work in the repository root and, unless ``dualloop
    reproduce`` already resolved them, replace the notebook's parameters in ``namespace`` (its
    ``globals()``) by :func:`resolve`'s."""
    quiet()
    show_figures_inline()
    os.chdir(REPO_ROOT)
    if os.environ.get(RESOLVED_ENV) == notebook:  # dualloop reproduce resolved and injected every parameter
        return
    injected = injected_names(list(namespace.get("In", [])))
    resolved = resolve(notebook, namespace, injected)
    namespace.update(resolved)
    if injected is None:
        print(
            f"{notebook}: the parameters of profile {resolved['profile']!r} as `dualloop reproduce` resolves them, "
            f"with the parameters cell's edits; output in {resolved['output_dir']}"
        )
