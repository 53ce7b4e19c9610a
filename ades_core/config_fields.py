"""Config field types: the one-line :class:`ConfigError`, budget parsing, and the validators
and converters every config section uses (attrs ``validator=`` / ``converter=`` callables).

Budgets are L-inf radii in [0, 1] pixel scale, given as ``"8/255"`` or ``0.0314``.
:mod:`ades_core.config` and :mod:`ades_core.training_config` build their sections from these.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import attrs

from ades_core.errors import AdesError
from ades_core.norms import NORMS
from ades_core.registries import ATTACKS
from ades_core.registry import RegistryError

# ---------------------------------------------------------------- errors


class ConfigError(AdesError, ValueError):
    """A config value of the wrong type or out of range; one line naming the field.

    Attributes:
        field: the dotted path of the field (``"attack.steps"``, ``"seed"``);
            sections prefix their name as the error passes through them.
        reason: what is wrong and what is accepted (``"must be an integer >= 1, got 0"``).
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason

    def within(self, section: str) -> ConfigError:
        """The same error one level up: ``steps`` -> ``attack.steps``."""
        return type(self)(f"{section}.{self.field}", self.reason)


class UnknownNameError(ConfigError, RegistryError):
    """A component name that is not registered; the reason lists the registered ones."""

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


# ---------------------------------------------------------------- budgets

_FRACTION = re.compile(r"^\s*([-+]?[0-9]*\.?[0-9]+)\s*/\s*([0-9]*\.?[0-9]+)\s*$")


def parse_eps(value: str | float | int) -> float:
    """A budget in [0, 1] pixel scale from ``"8/255"``, ``"0.0314"`` or a number.

    Raises:
        ValueError: not a number or fraction, or outside [0, 1].
    """
    number = parse_budget_number(value)
    if not math.isfinite(number) or not 0.0 <= number <= 1.0:
        raise ValueError(f"budget {value!r} is outside [0, 1] (pixel scale: 8/255 = 0.0314)")
    return number


def parse_budget_number(value: str | float | int) -> float:
    """``"8/255"``, ``"-0.1"`` or a number as a float, of any sign (no range check).

    Raises:
        ValueError: not a number or a fraction like ``8/255``.
    """
    if isinstance(value, bool):
        raise ValueError(f"budget must be a number or a fraction like 8/255, got {value!r}")
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        text = str(value).strip()
        match = _FRACTION.match(text)
        try:
            if match:
                denominator = float(match.group(2))
                if denominator == 0:
                    raise ZeroDivisionError
                number = float(match.group(1)) / denominator
            else:
                number = float(text)
        except (ValueError, ZeroDivisionError):
            raise ValueError(
                f"budget {value!r} is not a number or a fraction like 8/255"
            ) from None
    return number


def parse_lam(value: str | float | int) -> float:
    """The width ``lam`` of the adaptive budget range, as :func:`parse_eps`.

    A negative ``lam`` is refused with its own message: it would put the
    largest budget ``eps_min + lam`` below the smallest, ``eps_min``.
    """
    if parse_budget_number(value) < 0:
        raise ValueError(
            f"lam {value!r} is negative: eps_min + lam would lie below eps_min; "
            "lam is the width of the budget range [eps_min, eps_min + lam], in [0, 1]"
        )
    return parse_eps(value)


def parse_budget(value: str | float | int, norm: str = "linf") -> float:
    """A budget of ``norm`` from ``"8/255"``, ``"0.5"`` or a number: L-inf in [0, 1] pixel
    scale, L2 a Euclidean radius >= 0 (:meth:`~ades_core.norms.ThreatNorm.check_budget`).

    Raises:
        ValueError: one line: not a number or fraction, or out of the norm's range.
    """
    threat = NORMS.get(norm)
    return threat.check_budget(parse_budget_number(value), value if isinstance(value, str) else None)


def parse_non_negative_budget(value: str | float | int) -> float:
    """A budget of any norm: a finite number >= 0 (the run checks the norm's range).

    Raises:
        ValueError: not a number or a fraction, negative, or not finite.
    """
    number = parse_budget_number(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(
            f"budget {value!r} is outside [0, 1] (pixel scale: 8/255 = 0.0314) and not an L2 radius >= 0 either"
        )
    return number


def _eps_field(value: str | float | int, instance: object, field: attrs.Attribute) -> float:
    """attrs converter: a budget >= 0 of any norm (:func:`parse_lam`'s message for a negative ``lam``),
    errors naming the field; the run checks the range for its norm."""
    try:
        if field.name == "lam" and parse_budget_number(value) < 0:
            return parse_lam(value)
        return parse_non_negative_budget(value)
    except ValueError as exc:
        raise ConfigError(field.name, str(exc)) from None


def _optional_eps_field(value: str | float | int | None, instance: object, field: attrs.Attribute) -> float | None:
    """As :data:`EPS_FIELD`, ``None`` kept (the norm's own default)."""
    return None if value is None else _eps_field(value, instance, field)


EPS_FIELD = attrs.Converter(_eps_field, takes_self=True, takes_field=True)
OPTIONAL_EPS_FIELD = attrs.Converter(_optional_eps_field, takes_self=True, takes_field=True)


def format_eps(eps: float, norm: str = "linf") -> str:
    """A budget as tables print it: L-inf ``8/255`` when ``eps`` is a whole (or half) number of
    1/255 steps, else ``0.0314``; L2 ``0.5``."""
    return NORMS.get(norm).format(eps)


def parse_comma_list(value: str) -> tuple[str, ...]:
    """``"a, b,c"`` -> ``("a", "b", "c")``: the items, stripped of surrounding spaces.

    Raises:
        ValueError: one line, for an empty value or an empty item (``a,,b``,
            a leading or trailing comma), naming the value and what is accepted.
    """
    parts = [part.strip() for part in str(value).split(",")]
    if not any(parts):
        raise ValueError("expected a comma-separated list, got an empty value")
    if not all(parts):
        position = parts.index("") + 1
        raise ValueError(
            f"{value!r} has an empty item (item {position}); give items separated by single commas, e.g. a,b,c"
        )
    return tuple(parts)


def _comma_tuple(value: str | tuple | list) -> tuple[str, ...]:
    if isinstance(value, str):
        return parse_comma_list(value)
    return tuple(value)


def _float_tuple(value: str | tuple | list | None) -> tuple[float, ...] | None:
    if value is None:
        return None
    parts = _comma_tuple(value) if isinstance(value, str) else tuple(value)
    try:
        return tuple(float(p) for p in parts)
    except ValueError:
        raise ValueError(f"expected comma-separated numbers, got {value!r}") from None


def _named(convert: Any) -> attrs.Converter:
    """An attrs converter whose ``ValueError``/``TypeError`` names the field."""

    def run(value: Any, field: attrs.Attribute) -> Any:
        try:
            return convert(value)
        except (ValueError, TypeError) as exc:
            raise ConfigError(field.name, str(exc)) from None

    return attrs.Converter(run, takes_field=True)


def _path(value: str | Path) -> Path:
    if not isinstance(value, (str, Path)):
        raise TypeError(f"expected a folder path, got {value!r}")
    return Path(value)


def _registered(registry) -> Any:
    def check(instance: object, attribute: attrs.Attribute, value: str) -> None:
        if not isinstance(value, str) or value not in registry:
            raise UnknownNameError(
                attribute.name,
                f"unknown {registry.family} {value!r}; registered: {', '.join(registry.names())}",
            )

    return check


def _training_attack(instance: object, attribute: attrs.Attribute, value: str) -> None:
    """A registered attack that can generate training examples (not an evaluation-only one)."""
    _registered(ATTACKS)(instance, attribute, value)
    if not ATTACKS.entry(value).info.training:
        usable = [n for n in ATTACKS.names() if ATTACKS.entry(n).info.training]
        raise ConfigError(
            f"attack.{attribute.name}",
            f"attack {value!r} is for evaluation only; training attacks: {', '.join(usable)}",
        )


def _each_registered(registry) -> Any:
    def check(instance: object, attribute: attrs.Attribute, value: tuple[str, ...]) -> None:
        for name in value:
            _registered(registry)(instance, attribute, name)

    return check


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int_at_least(low: int) -> Any:
    """Validator: an integer (not a bool) ``>= low``."""

    def check(instance: object, attribute: attrs.Attribute, value: object) -> None:
        if not _is_int(value) or value < low:
            raise ConfigError(attribute.name, f"must be an integer >= {low}, got {value!r}")

    return check


def _number_in(
    low: float, high: float | None = None, *, low_open: bool = False, high_open: bool = False
) -> Any:
    """Validator: a finite number in the interval ``low .. high`` (``None``: unbounded)."""
    left, right = "(" if low_open else "[", ")" if high_open else "]"
    interval = f"{left}{low:g}, {'inf)' if high is None else f'{high:g}{right}'}"

    def check(instance: object, attribute: attrs.Attribute, value: object) -> None:
        ok = _is_number(value) and (value > low if low_open else value >= low)
        if ok and high is not None:
            ok = value < high if high_open else value <= high
        if not ok:
            raise ConfigError(attribute.name, f"must be a number in {interval}, got {value!r}")

    return check


def _boolean(instance: object, attribute: attrs.Attribute, value: object) -> None:
    if not isinstance(value, bool):
        raise ConfigError(attribute.name, f"must be true or false, got {value!r}")


def _positive_or_none(instance: object, attribute: attrs.Attribute, value: int | None) -> None:
    if value is not None and (not _is_int(value) or value <= 0):
        raise ConfigError(attribute.name, f"must be a positive integer or unset, got {value!r}")


def _in_choices(*choices: str) -> Any:
    def check(instance: object, attribute: attrs.Attribute, value: str) -> None:
        if value not in choices:
            raise ConfigError(attribute.name, f"{value!r} is not one of: {', '.join(choices)}")

    return check


_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")


def _device(instance: object, attribute: attrs.Attribute, value: str) -> None:
    if not isinstance(value, str) or not _DEVICE.match(value):
        raise ConfigError(attribute.name, f"{value!r} is not one of: auto, cpu, cuda, cuda:N, mps")
