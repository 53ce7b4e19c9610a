"""Every code example in README.md and docs/ runs, and every ``ades`` command in them parses.

* Python: every fenced ```` ```python ```` block of a file runs, in order, in one
  namespace per file, in a temporary working directory, with the real
  CIFAR-10 image folder at the path the docs use
  (``~/.cache/ades/cifar10-imagefolder``, from the ``cifar10_dir`` fixture).
  A block whose preceding non-blank line is ``<!-- snippet: skip -->`` is not
  run (multi-hour training, a run folder the reader has and the test has not).
  Components the examples register are unregistered afterwards.
* Shell: every command ``ades ...``, ``python -m ades_cli ...`` and
  ``torchrun ... -m ades_cli ...`` in ```` ```bash ````/``sh``/``console``
  blocks (and in the README's plain blocks) is parsed by the click command it
  names, without running it, so a renamed or removed option or command fails
  here. ``...`` stands for options left out and is dropped; shell variables
  and placeholders are parsed as the values they stand for.
"""

from __future__ import annotations

import re
import shlex
import sys
import types
from pathlib import Path

import attrs
import click
import pytest

REPO = Path(__file__).resolve().parents[2]
SKIP_MARK = "<!-- snippet: skip -->"
DATA_PATH_IN_DOCS = "~/.cache/ades/cifar10-imagefolder"
SHELL_LANGUAGES = {"bash", "sh", "shell", "console", "zsh"}
PYTHON_LANGUAGES = {"python", "py"}
_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+|~~~+)\s*(?P<info>[^`]*)$")
_CLOSING = re.compile(r"^\s*(```+|~~~+)\s*$")


def doc_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def _name(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


@attrs.frozen
class Block:
    """One fenced block: its language (first word of the info string), code and place."""

    path: Path
    line: int  # 1-based line of the first code line
    language: str
    code: str
    skipped: bool


def fenced_blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file, in order."""
    return blocks_of_text(path.read_text(encoding="utf-8"), path)


def blocks_of_text(text: str, path: Path) -> list[Block]:
    """The fenced blocks of Markdown ``text`` (from ``path``); an indented fence's block is dedented."""
    lines = text.splitlines()
    blocks: list[Block] = []
    previous = ""  # the last non-blank line before the current one
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if match is None:
            previous = lines[i].strip() or previous
            i += 1
            continue
        fence, indent = match["fence"], len(match["indent"])
        language = (match["info"].split() or [""])[0].lower()
        j = i + 1
        while j < len(lines) and not (
            (closing := _CLOSING.match(lines[j])) and closing[1][0] == fence[0] and len(closing[1]) >= len(fence)
        ):
            j += 1
        body = [line[indent:] if line[:indent].strip() == "" else line.lstrip() for line in lines[i + 1 : j]]
        blocks.append(Block(path, i + 2, language, "\n".join(body) + "\n", previous == SKIP_MARK))
        previous = "```"
        i = j + 1
    return blocks


def python_blocks(path: Path) -> list[Block]:
    return [b for b in fenced_blocks(path) if b.language in PYTHON_LANGUAGES]


# ------------------------------------------------------------------ shell commands
@attrs.frozen
class Command:
    """An ``ades`` command line found in the docs: where, as written, and its arguments after ``ades``."""

    where: str
    text: str
    args: tuple[str, ...]
    error: str = ""  # the shell line could not be split into words


def _logical_lines(block: Block) -> list[tuple[int, str]]:
    """Lines with backslash continuations joined; for console blocks only ``$ `` prompts."""
    out: list[tuple[int, str]] = []
    pending, start = "", 0
    for offset, raw in enumerate(block.code.splitlines()):
        line = raw.rstrip()
        if not pending:
            start = block.line + offset
            if block.language == "console":
                if not line.lstrip().startswith("$ "):
                    continue
                line = line.lstrip()[2:]
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        out.append((start, pending + line))
        pending = ""
    if pending:
        out.append((start, pending))
    return out


def _simple_commands(line: str) -> list[list[str]]:
    """The simple commands of a shell line: split at ``&&``, ``||``, ``;``, ``|``; comments dropped."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token and set(token) <= set(";&|"):
            commands.append([])
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def _ades_args(tokens: list[str]) -> list[str] | None:
    """The arguments after ``ades`` / ``-m ades_cli`` of one simple command, or ``None``."""
    while tokens and (tokens[0] in ("do", "then", "else", "time") or re.match(r"^[A-Za-z_]\w*=", tokens[0])):
        tokens = tokens[1:]  # shell keywords and VAR=value prefixes
    if not tokens:
        return None
    if tokens[0] == "ades":
        rest = tokens[1:]
    else:
        for k in range(len(tokens) - 1):
            if tokens[k] == "-m" and tokens[k + 1] == "ades_cli":
                rest = tokens[k + 2 :]
                break
        else:
            return None
    return [t for t in rest if t != "..."]


def commands_in(path: Path) -> list[Command]:
    commands = []
    for block in fenced_blocks(path):
        if block.language not in SHELL_LANGUAGES and not (path.name == "README.md" and block.language == ""):
            continue
        for line_number, line in _logical_lines(block):
            if not re.search(r"(^|\s)(ades\s|ades$)|-m\s+ades_cli\b", line):
                continue
            try:
                simple = _simple_commands(line)
            except ValueError as exc:  # an unbalanced quote, say
                commands.append(Command(f"{_name(path)}:{line_number}", line, (), error=str(exc)))
                continue
            for tokens in simple:
                args = _ades_args(tokens)
                if args is not None:
                    commands.append(Command(f"{_name(path)}:{line_number}", " ".join(tokens), tuple(args)))
    return commands


def parse_with_cli(args: list[str]) -> None:
    """Parse ``ades ARGS`` as the CLI would, without running it (``--help`` counts as parsed).

    Raises:
        click.UsageError: an unknown command or option, a bad value, a missing argument.
    """
    from ades_cli.main import cli

    command: click.Command = cli
    name, parent = "ades", None
    while True:
        if isinstance(command, click.Group) and not args:
            return  # a bare group prints its help
        try:
            if not isinstance(command, click.Group) or args[0].startswith("-"):
                with command.make_context(name, list(args), parent=parent):
                    return
            parent = click.Context(command, info_name=name, parent=parent)
            sub = command.get_command(parent, args[0])
        except click.exceptions.Exit as exc:  # --help, --version
            if exc.exit_code != 0:
                raise
            return
        if sub is None:
            raise click.UsageError(f"no such command {args[0]!r}; commands: {', '.join(command.list_commands(parent))}")
        command, name, args = sub, args[0], args[1:]


ALL_COMMANDS = [c for path in doc_files() for c in commands_in(path)]
RUNNABLE = [p for p in doc_files() if any(not b.skipped for b in python_blocks(p))]


# ------------------------------------------------------------------ the extraction itself
def test_blocks_and_skip_marks_are_found():
    lines = [
        "intro", "", "<!-- snippet: skip -->", "```python", "x = 1", "```", "",
        "```python", "if True:", "    y = 2", "```", "", "  ```bash", "  ades list", "  ```",
    ]  # fmt: skip
    blocks = blocks_of_text("\n".join(lines), REPO / "docs" / "example.md")
    assert [(b.language, b.code, b.skipped) for b in blocks] == [
        ("python", "x = 1\n", True),
        ("python", "if True:\n    y = 2\n", False),  # indentation kept
        ("bash", "ades list\n", False),  # an indented fence's block dedented
    ]
    assert [b.line for b in blocks] == [5, 9, 14]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("ades list  # every component", [["list"]]),
        ("pip install -e . && ades run --preset quick --out q", [["run", "--preset", "quick", "--out", "q"]]),
        ("for d in a b; do ades eval runs/$d --n 10; done", [["eval", "runs/$d", "--n", "10"]]),
        ("OMP_NUM_THREADS=1 torchrun --nproc-per-node 2 -m ades_cli run --device cpu ...", [["run", "--device", "cpu"]]),
        ("unzip -qn data.zip -d ~/.cache/ades", []),
    ],
    ids=["comment", "after-and", "for-loop", "torchrun", "not-ades"],
)
def test_commands_are_cut_out_of_shell_lines(line, expected):
    found = [a for tokens in _simple_commands(line) if (a := _ades_args(tokens)) is not None]
    assert found == expected


def test_a_renamed_option_or_command_fails_to_parse():
    parse_with_cli(["eval", "runs/x", "--attack", "pgd20", "--eps", "8/255"])
    parse_with_cli(["--help"])
    with pytest.raises(click.UsageError, match="--no-such-option"):
        parse_with_cli(["run", "--no-such-option", "1"])
    with pytest.raises(click.UsageError, match="no such command 'train'"):
        parse_with_cli(["train", "--epochs", "1"])
    with pytest.raises(click.UsageError):
        parse_with_cli(["eval", "runs/x", "--eps", "eight"])  # a value the option's type refuses


def test_the_docs_hold_commands_and_runnable_examples():
    wheres = {c.where.split(":")[0] for c in ALL_COMMANDS}
    assert {"README.md", "docs/distributed.md", "docs/evaluation.md"} <= wheres
    assert any(c.args[:1] == ("eval",) and "torchrun" in c.text for c in ALL_COMMANDS)
    assert {"README.md", "docs/plugins.md"} <= {_name(p) for p in RUNNABLE}


# ------------------------------------------------------------------ the docs
@pytest.mark.parametrize("command", ALL_COMMANDS, ids=[c.where for c in ALL_COMMANDS])
def test_documented_command_parses(command: Command):
    assert not command.error, f"{command.where}: `{command.text}` is not a shell line: {command.error}"
    try:
        parse_with_cli(list(command.args))
    except click.UsageError as exc:
        pytest.fail(f"{command.where}: `{command.text}` does not parse: {exc.format_message()}")


def _registries():
    import ades_core.registries as registries
    from ades_core.registry import Registry

    return [value for value in vars(registries).values() if isinstance(value, Registry)]


def _check_readme(namespace: dict, workdir: Path) -> None:
    assert (workdir / "runs" / "embedded" / "model.safetensors").is_file()
    assert 0.0 <= namespace["history"][-1]["test_pgd_acc"] <= 1.0
    assert not namespace["model"].training


AFTERWARDS = {"README.md": _check_readme}
"""Checks of what a file's examples produced, beyond running without error."""


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
@pytest.mark.parametrize("path", RUNNABLE, ids=[_name(p) for p in RUNNABLE])
def test_python_examples_run(path: Path, tmp_path, monkeypatch, cifar10_dir):
    monkeypatch.chdir(tmp_path)
    module = types.ModuleType("docs_snippets_" + re.sub(r"\W", "_", _name(path)))
    module.__file__ = str(path)
    registries = _registries()
    before = [set(r.names()) for r in registries]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    try:
        for block in python_blocks(path):
            if block.skipped:
                continue
            code = block.code.replace(DATA_PATH_IN_DOCS, str(cifar10_dir))
            # padded so that a traceback names the line of the Markdown file
            exec(compile("\n" * (block.line - 1) + code, str(path), "exec"), module.__dict__)  # noqa: S102
        check = AFTERWARDS.get(_name(path))
        if check is not None:
            check(module.__dict__, tmp_path)
    finally:
        for registry, names in zip(registries, before):
            for name in set(registry.names()) - names:
                registry.unregister(name)
