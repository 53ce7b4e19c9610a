"""The study file: arms x seeds of ``ades run``, evaluated with ``ades eval``, one table.

A study file is TOML (``.toml``) or JSON (``.json``) with these keys::

    name        str            the study's name (the table's title)
    out         str            the study folder; relative to the working directory, ``~`` expanded
    reference   str            the arm every other arm is compared with (paired over seeds)
    comparisons [[arm, against], ...]  further paired comparisons, ``arm - against`` (optional;
                               for example an arm against its controls)
    seeds       [int, ...]     at least 2 distinct seeds >= 0 (a paired interval needs 2)
    parallel    int            runs side by side (default 1)
    description str            free text, copied into the table (optional)
    run         {option: value}   ``ades run`` options common to every arm (optional)
    eval        {option: value}   ``ades eval`` options of every run (optional)
    autoattack  {arms, seeds, n}  a smaller set of runs also evaluated with AutoAttack (optional)
    arms        [{name, option: value, ...}, ...]   each arm's own ``ades run`` options

Option keys are the command-line option names without the leading ``--``
(``train-subset``; ``train_subset`` is read the same). Values are strings,
numbers, booleans (``true`` is ``--flag``, ``false`` is ``--no-flag``) or
lists (joined with commas). An arm's options override the common ones. The
study owns ``seed``, ``out``, ``resume`` and ``overwrite`` of ``ades run`` and
``out``, ``resume``, ``threads`` and the model of ``ades eval``; giving them
is an error. This module checks the file's shape; whether every option is one
``ades run`` / ``ades eval`` accepts is checked against the commands
themselves by ``ades_cli.study`` before anything runs.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from ades_core.errors import AdesError

TOP_KEYS = ("name", "out", "reference", "seeds", "parallel", "description", "run", "eval", "autoattack", "arms",
            "comparisons")
REQUIRED_KEYS = ("name", "out", "reference", "seeds", "arms")
AUTOATTACK_KEYS = ("arms", "seeds", "n")
RUN_OWNED = ("seed", "out", "resume", "overwrite", "help")
"""``ades run`` options the study sets itself (per run) and a study file may not give."""
EVAL_OWNED = ("out", "resume", "threads", "quiet", "plot", "help", "arch", "weights", "num-classes", "mean", "std")
"""``ades eval`` options the study sets itself (or that evaluate another model) and a study file may not give."""
DEFAULT_EVAL_ATTACKS = ("pgd20", "cw")
"""The study's attacks when ``eval.attack`` is not given (AutoAttack goes in ``[autoattack]``)."""

_ARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
OptionValue = str | int | float | bool | tuple[str, ...]


class StudyFileError(AdesError, ValueError):
    """A study file that cannot be used as written; one line naming the key and what is accepted."""


def _keys(keys: tuple[str, ...]) -> str:
    return ", ".join(keys)


def normalise_options(raw: Any, where: str) -> dict[str, OptionValue]:
    """Command-line options from a study-file table: ``{"train_subset": 16}`` -> ``{"train-subset": 16}``.

    Raises:
        StudyFileError: not a table, a value that is not a string, number,
            boolean or list of those, or two keys naming the same option.
    """
    if not isinstance(raw, Mapping):
        raise StudyFileError(f"{where} must be a table of option = value, got {type(raw).__name__}")
    options: dict[str, OptionValue] = {}
    for key, value in raw.items():
        name = str(key).lstrip("-").replace("_", "-")
        if not name:
            raise StudyFileError(f"{where}: an empty option name")
        if name in options:
            raise StudyFileError(f"{where}: option {name!r} is given twice ({key!r})")
        if isinstance(value, list | tuple):
            if not value or not all(isinstance(x, str | int | float) and not isinstance(x, bool) for x in value):
                raise StudyFileError(f"{where}.{name}: a list must hold strings or numbers, got {value!r}")
            value = tuple(str(x) for x in value)
        elif not isinstance(value, str | int | float | bool):
            raise StudyFileError(
                f"{where}.{name}: a value must be a string, number, boolean or list, got {type(value).__name__}"
            )
        options[name] = value
    return options


def _refuse_owned(options: Mapping[str, OptionValue], owned: tuple[str, ...], where: str, command: str) -> None:
    for name in options:
        if name in owned:
            raise StudyFileError(
                f"{where}.{name}: the study sets it for every run; {command} options it owns: {_keys(owned)}"
            )


def _seeds(raw: Any, where: str, *, minimum: int) -> tuple[int, ...]:
    if not isinstance(raw, list | tuple) or not all(isinstance(s, int) and not isinstance(s, bool) for s in raw):
        raise StudyFileError(f"{where} must be a list of integer seeds, got {raw!r}")
    if any(s < 0 for s in raw):
        raise StudyFileError(f"{where}: seeds must be >= 0, got {list(raw)}")
    if len(set(raw)) != len(raw):
        raise StudyFileError(f"{where}: seeds must be distinct, got {list(raw)}")
    if len(raw) < minimum:
        raise StudyFileError(
            f"{where}: a paired 95% interval needs at least {minimum} seeds, got {list(raw)}"
            if minimum >= 2
            else f"{where} must name at least {minimum} seed"
        )
    return tuple(raw)


def _comparisons(raw: Any, arm_names: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """``[[arm, against], ...]``: pairs of two different arms, each pair once."""
    if not isinstance(raw, list | tuple):
        raise StudyFileError(f"comparisons must be a list of [arm, against] pairs, got {raw!r}")
    pairs: list[tuple[str, str]] = []
    for entry in raw:
        if (not isinstance(entry, list | tuple) or len(entry) != 2
                or not all(isinstance(name, str) for name in entry)):
            raise StudyFileError(f"comparisons: each entry is a pair of arm names [arm, against], got {entry!r}")
        for name in entry:
            if name not in arm_names:
                raise StudyFileError(f"comparisons: no arm named {name!r}; arms: {_keys(arm_names)}")
        pair = (entry[0], entry[1])
        if pair[0] == pair[1]:
            raise StudyFileError(f"comparisons: {list(pair)} compares an arm with itself; name two different arms")
        if pair in pairs:
            raise StudyFileError(f"comparisons: {list(pair)} is given twice")
        pairs.append(pair)
    return tuple(pairs)


def _positive_int(raw: Any, where: str) -> int:
    if not isinstance(raw, int) or isinstance(raw, bool) or raw < 1:
        raise StudyFileError(f"{where} must be an integer >= 1, got {raw!r}")
    return raw


def _text(raw: Any, where: str) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise StudyFileError(f"{where} must be a non-empty string, got {raw!r}")
    return raw.strip()


@attrs.frozen(kw_only=True)
class Arm:
    """One arm: a name (its folder under the study's ``out``) and its own ``ades run`` options."""

    name: str = attrs.field()
    options: Mapping[str, OptionValue] = attrs.field(factory=dict, converter=lambda o: dict(o))

    @name.validator
    def _check_name(self, attribute, value) -> None:
        if not isinstance(value, str) or not _ARM_NAME.match(value):
            raise StudyFileError(
                f"arm name {value!r} must start with a letter or digit and hold only letters, digits, '.', '_', '-'"
            )

    @classmethod
    def from_dict(cls, raw: Any, index: int) -> Arm:
        where = f"arms[{index}]"
        if not isinstance(raw, Mapping):
            raise StudyFileError(f"{where} must be a table with a name and ades run options, got {raw!r}")
        if "name" not in raw:
            raise StudyFileError(f"{where} has no name; every arm needs name = \"...\"")
        name = raw["name"]
        options = normalise_options({k: v for k, v in raw.items() if k != "name"}, f"arm {name!r}")
        _refuse_owned(options, RUN_OWNED, f"arm {name!r}", "ades run")
        return cls(name=name, options=options)


@attrs.frozen(kw_only=True)
class AutoAttackPlan:
    """The runs also evaluated with AutoAttack: ``arms`` x ``seeds`` on ``n`` test images (None: all)."""

    arms: tuple[str, ...] = attrs.field(converter=tuple)
    seeds: tuple[int, ...] = attrs.field(converter=tuple)
    n: int | None = None

    def covers(self, arm: str, seed: int) -> bool:
        return arm in self.arms and seed in self.seeds

    @classmethod
    def from_dict(cls, raw: Any, arm_names: tuple[str, ...], seeds: tuple[int, ...]) -> AutoAttackPlan:
        if not isinstance(raw, Mapping):
            raise StudyFileError(f"autoattack must be a table {{arms, seeds, n}}, got {raw!r}")
        for key in raw:
            if key not in AUTOATTACK_KEYS:
                raise StudyFileError(f"autoattack: unknown key {key!r}; accepted: {_keys(AUTOATTACK_KEYS)}")
        arms = raw.get("arms", list(arm_names))
        if not isinstance(arms, list | tuple) or not arms or not all(isinstance(a, str) for a in arms):
            raise StudyFileError(f"autoattack.arms must be a non-empty list of arm names, got {arms!r}")
        for arm in arms:
            if arm not in arm_names:
                raise StudyFileError(f"autoattack.arms: no arm named {arm!r}; arms: {_keys(arm_names)}")
        chosen = _seeds(raw.get("seeds", list(seeds)), "autoattack.seeds", minimum=1)
        for seed in chosen:
            if seed not in seeds:
                raise StudyFileError(f"autoattack.seeds: seed {seed} is not one of the study's seeds {list(seeds)}")
        n = raw.get("n")
        return cls(arms=arms, seeds=chosen, n=None if n is None else _positive_int(n, "autoattack.n"))


def eval_attacks(options: Mapping[str, OptionValue]) -> tuple[str, ...]:
    """The attack names of the study's main evaluation (``eval.attack``, or the study's default)."""
    raw = options.get("attack")
    if raw is None:
        return DEFAULT_EVAL_ATTACKS
    parts = raw if isinstance(raw, tuple) else str(raw).split(",")
    return tuple(p.strip().lower() for p in parts if p.strip())


@attrs.frozen(kw_only=True)
class StudySpec:
    """A validated study: every key checked, every arm and seed named (see the module docstring)."""

    name: str
    out: Path = attrs.field(converter=lambda p: Path(p).expanduser())
    reference: str
    comparisons: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=tuple)
    seeds: tuple[int, ...] = attrs.field(converter=tuple)
    arms: tuple[Arm, ...] = attrs.field(converter=tuple)
    run_options: Mapping[str, OptionValue] = attrs.field(factory=dict, converter=lambda o: dict(o))
    eval_options: Mapping[str, OptionValue] = attrs.field(factory=dict, converter=lambda o: dict(o))
    autoattack: AutoAttackPlan | None = None
    parallel: int = 1
    description: str = ""
    source: Path | None = None

    @property
    def arm_names(self) -> tuple[str, ...]:
        return tuple(arm.name for arm in self.arms)

    def arm(self, name: str) -> Arm:
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise StudyFileError(f"no arm named {name!r}; arms: {_keys(self.arm_names)}")

    def arm_options(self, name: str) -> dict[str, OptionValue]:
        """The ``ades run`` options of arm ``name``: the common ones, overridden by the arm's own."""
        return {**self.run_options, **self.arm(name).options}

    @property
    def attacks(self) -> tuple[str, ...]:
        return eval_attacks(self.eval_options)

    def run_folder(self, arm: str, seed: int) -> Path:
        """``<out>/<arm>/seed<k>``: the run folder of one (arm, seed)."""
        return self.out / arm / f"seed{seed}"

    @classmethod
    def from_dict(cls, raw: Any, source: Path | None = None) -> StudySpec:
        """Check a parsed study file; raises :class:`StudyFileError` (one line) on the first problem."""
        if not isinstance(raw, Mapping):
            raise StudyFileError(f"a study file holds a table of keys ({_keys(TOP_KEYS)}), got {type(raw).__name__}")
        for key in raw:
            if key not in TOP_KEYS:
                raise StudyFileError(f"unknown key {key!r}; accepted: {_keys(TOP_KEYS)}")
        for key in REQUIRED_KEYS:
            if key not in raw:
                raise StudyFileError(f"missing key {key!r}; required: {_keys(REQUIRED_KEYS)}")
        if not isinstance(raw["arms"], list | tuple) or not raw["arms"]:
            raise StudyFileError("arms must be a non-empty list of tables ([[arms]] name = ...)")
        arms = tuple(Arm.from_dict(a, i) for i, a in enumerate(raw["arms"]))
        names = tuple(a.name for a in arms)
        for name in names:
            if names.count(name) > 1:
                raise StudyFileError(f"arm name {name!r} is used twice; arm names must be distinct")
        reference = _text(raw["reference"], "reference")
        if reference not in names:
            raise StudyFileError(f"reference: no arm named {reference!r}; arms: {_keys(names)}")
        comparisons = _comparisons(raw.get("comparisons", []), names)
        seeds = _seeds(raw["seeds"], "seeds", minimum=2)
        run_options = normalise_options(raw.get("run", {}), "run")
        _refuse_owned(run_options, RUN_OWNED, "run", "ades run")
        eval_options = normalise_options(raw.get("eval", {}), "eval")
        _refuse_owned(eval_options, EVAL_OWNED, "eval", "ades eval")
        autoattack = None
        if "autoattack" in raw:
            autoattack = AutoAttackPlan.from_dict(raw["autoattack"], names, seeds)
            if any(a.startswith("autoattack") for a in eval_attacks(eval_options)):
                raise StudyFileError(
                    "eval.attack includes autoattack and [autoattack] runs it again on a subset; keep one of them"
                )
        description = raw.get("description", "")
        if not isinstance(description, str):
            raise StudyFileError(f"description must be a string, got {description!r}")
        return cls(
            name=_text(raw["name"], "name"),
            out=_text(raw["out"], "out"),
            reference=reference,
            comparisons=comparisons,
            seeds=seeds,
            arms=arms,
            run_options=run_options,
            eval_options=eval_options,
            autoattack=autoattack,
            parallel=_positive_int(raw.get("parallel", 1), "parallel"),
            description=description,
            source=source,
        )

    @classmethod
    def from_file(cls, path: str | Path) -> StudySpec:
        """Read and check a ``.toml`` or ``.json`` study file; errors name the file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise StudyFileError(f"{path}: cannot read the study file ({exc.strerror or exc})") from None
        suffix = path.suffix.lower()
        try:
            if suffix == ".toml":
                raw = tomllib.loads(text)
            elif suffix == ".json":
                raw = json.loads(text)
            else:
                raise StudyFileError(f"{path}: a study file ends in .toml or .json, got {suffix or 'no suffix'!r}")
        except tomllib.TOMLDecodeError as exc:
            raise StudyFileError(f"{path}: not valid TOML ({exc})") from None
        except json.JSONDecodeError as exc:
            raise StudyFileError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
        try:
            return cls.from_dict(raw, source=path)
        except StudyFileError as exc:
            raise StudyFileError(f"{path}: {exc}") from None
