"""The commands the READMEs show run as written, from the repository root: each ``python -m dualloop`` line
passes every check of the CLI (with and without its ``[optional]`` parts), each ``make`` target exists, each
``.venv/bin/<tool>`` is installed beside this interpreter, and the cheap ones are run."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import dualloop.experiment.training
import dualloop.pipeline
from dualloop.__main__ import main
from dualloop.config import REPO_ROOT

USER_PAGES = ("README.md", "params/README.md", "figures/README.md")
EVERY_PAGE = (*USER_PAGES, "benchmarks/README.md", "dualloop/offline_set/README.md")
STEPS = "2"  # what a reader types for the README's placeholder N; DIR is a scratch folder


def code_spans(page: str) -> list[str]:
    """The inline code spans and the lines of the fenced code blocks of ``page``, a wrapped span joined."""
    text = (REPO_ROOT / page).read_text(encoding="utf-8")
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.M | re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    prose = re.sub(r"^```[a-z]*\n.*?^```", "", text, flags=re.M | re.S)
    spans = [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose)]
    return [line for line in lines + spans if line]


def commands(prefix: str) -> list[tuple[str, str]]:
    return [(page, span) for page in USER_PAGES for span in code_spans(page) if span.startswith(prefix)]


def variants(command: str, out: Path) -> list[list[str]]:
    """The command without its ``[optional]`` parts, and with all of them, placeholders filled in (``DIR``:
    ``out``)."""
    bare = re.sub(r"\s*\[--[^\]]*\]", "", command)
    full = re.sub(r"\[(--[^\]]*)\]", r"\1", command)
    filled = {"N": STEPS, "DIR": str(out)}
    return [[filled.get(word, word) for word in shlex.split(text)] for text in (bare, full)]


DUALLOOP = commands(".venv/bin/python -m dualloop")


def test_the_readmes_show_dualloop_commands_only_through_the_environment_make_builds():
    assert len(DUALLOOP) >= 6
    for page in EVERY_PAGE:
        for span in code_spans(page):
            assert not re.search(r"(?<![/\w])python3? -m dualloop\b", span), f"{page}: `{span}` needs .venv/bin/"


class Validated(BaseException):
    """Raised where a command, every value checked, would start its work (train, execute a phase)."""


@pytest.mark.parametrize(("page", "command"), DUALLOOP, ids=[f"{p}:{c[29:60]}" for p, c in DUALLOOP])
def test_every_dualloop_command_of_the_readmes_passes_every_check_of_the_cli(
    page, command, tmp_path, monkeypatch, capsys
):
    """Each command, with and without its optional parts, through ``main`` up to where its work would start: the
    profile, method, prompt set and every ``--set`` value checked as they are when the command runs."""
    for variable in ("OPENAI_API_KEY", "GEMINI_API_KEY"):  # the paper profile's judges need their keys set
        monkeypatch.setenv(variable, "sk-readme-check")

    def start(*args, **kwargs):
        raise Validated

    monkeypatch.setattr(dualloop.experiment.training, "ensure_run", start)
    monkeypatch.setattr(dualloop.pipeline, "_execute", start)
    monkeypatch.setattr(dualloop.pipeline, "_run_at_once", start)
    for argv in variants(command, tmp_path / "out"):
        arguments = argv[3:]
        if "--out" not in arguments:  # where it writes is the reader's choice; here, not into the checkout
            arguments += ["--out", str(tmp_path / "out")]
        try:
            code = main(arguments)
        except SystemExit:
            code = 2
        except Validated:
            code = 0
        assert code == 0, f"{page}: `{' '.join(argv)}` is refused: {capsys.readouterr().err.strip()}"


def test_every_make_target_and_installed_tool_the_readmes_name_exists():
    targets = set(re.findall(r"^([a-z][\w-]*):", (REPO_ROOT / "Makefile").read_text(), flags=re.M))
    bin_dir = Path(sys.executable).parent
    for page in USER_PAGES:
        for span in code_spans(page):
            for target in re.findall(r"(?:^|&& )make ([a-z][\w-]*)", span):
                assert target in targets, f"{page}: `{span}` names no Makefile target {target!r}"
            for tool in re.findall(r"\.venv/bin/([\w-]+)", span):
                assert (bin_dir / tool).exists(), f"{page}: `{span}`: {tool} is not installed in {bin_dir}"


def test_the_cheap_commands_run_as_written_from_the_repository_root(tmp_path):
    bin_dir = Path(sys.executable).parent
    shown = [span for page in USER_PAGES for span in code_spans(page)]
    for command, printed in (
        (".venv/bin/papermill --help-notebook notebooks/02_main_comparison.ipynb", "seeds"),
        (".venv/bin/python -m dualloop serve-command --profile cpu [--out DIR]", "--served-model-name"),
    ):
        assert command in shown
        argv = variants(command, tmp_path)[-1]
        argv[0] = str(bin_dir / argv[0].removeprefix(".venv/bin/"))
        result = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"`{command}`: {result.stderr[-2000:]}"
        assert printed in result.stdout
