"""Value checks declared next to config fields, run where a config is composed.

A config dataclass (an experiment section in ``fusionbench.config`` or a component's ``Config``)
says what each option allows in the field's type, so ``fusionbench validate``, a grid's pre-flight
and ``run`` reject a bad value before anything is built or trained:

* an enumeration is a ``Literal`` (``mode: Literal["concat", "add", "gated"] = "concat"``);
  OmegaConf enforces it on every merge, and ``check_choices`` words the error (key path, value,
  allowed values, did-you-mean) before OmegaConf would;
* a numeric domain is a ``Range`` in ``Annotated`` metadata (``batch_size: PositiveInt = 64``,
  ``dropout: Annotated[float, Range(ge=0, lt=1)] = 0.1``); ``OneOf`` lists the values of a ``str``
  field that YAML may write as a number (``precision: 16``); ``Note`` adds what the values mean to
  the message;
* a constraint between fields, or one that needs the experiment around the component (the model
  width ``d_model``), is a method ``check(self, key, *, d_model=None)`` on the dataclass: it raises
  ``ConfigError`` naming ``key`` plus the field, and receives the context values it names.

``check_config`` runs all of it on a dataclass instance: declared types of plain fields (for
configs built in Python, which OmegaConf never saw), choices and ranges, nested sections, then the
``check`` hook. It imports nothing but the errors, so every layer can use it.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import numbers
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, Literal, Union

from fusionbench.errors import ConfigError


@dataclass(frozen=True)
class Range:
    """A numeric domain: bounds (``ge``/``gt``/``le``/``lt``, each optional) plus ``also``, values
    allowed outside them (``-1`` = "all"); ``note`` says what the bounds protect or what a special
    value means, and is added to the message."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    also: tuple = ()
    note: str = ""

    def allows(self, value: Any) -> bool:
        if value in self.also:
            return True
        if value != value:  # NaN: every comparison is False, so no bound would catch it
            return False
        return not (
            (self.ge is not None and value < self.ge)
            or (self.gt is not None and value <= self.gt)
            or (self.le is not None and value > self.le)
            or (self.lt is not None and value >= self.lt)
        )

    def describe(self) -> str:
        """``>= 1``, ``in [0, 1)``, ``-1 or >= 1``: what the message says is allowed."""
        low = ("[", self.ge) if self.ge is not None else ("(", self.gt) if self.gt is not None else None
        high = ("]", self.le) if self.le is not None else (")", self.lt) if self.lt is not None else None
        if low and high:
            text = f"in {low[0]}{_num(low[1])}, {_num(high[1])}{high[0]}"
        elif low:
            text = f"{'>=' if low[0] == '[' else '>'} {_num(low[1])}"
        elif high:
            text = f"{'<=' if high[0] == ']' else '<'} {_num(high[1])}"
        else:
            text = "any number"
        if self.also:
            text = " or ".join([*(repr(v) for v in self.also), text])
        return text


@dataclass(frozen=True)
class OneOf:
    """The allowed values of a ``str`` field that cannot be a ``Literal`` because YAML may write a
    value as a number (``precision: 16`` is the string ``"16"`` in a ``str`` field)."""

    values: tuple[str, ...]


@dataclass(frozen=True)
class Note:
    """What a field's values mean, added to the message when a value is rejected (for a ``Literal``
    whose names alone do not say it: ``box_source``'s dataset / detector / precomputed)."""

    text: str


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(x)


#: Common domains, readable in a field's annotation.
PositiveInt = Annotated[int, Range(ge=1)]
NonNegativeInt = Annotated[int, Range(ge=0)]
PositiveFloat = Annotated[float, Range(gt=0)]
NonNegativeFloat = Annotated[float, Range(ge=0)]
#: A rate in ``[0, 1)`` (dropout, label smoothing): 1 would drop or smooth everything.
Fraction = Annotated[float, Range(ge=0, lt=1)]
Probability = Annotated[float, Range(ge=0, le=1)]


# -- what a field declares --------------------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    """What one field of a config dataclass allows, read from its type."""

    name: str
    base: Any  # int, float, bool, str, a dataclass, or Any (anything else)
    optional: bool = False
    choices: tuple | None = None
    literal: bool = False  # choices from a Literal type (else from OneOf metadata)
    range: Range | None = None
    note: str = ""


def _unwrap(tp: Any) -> tuple[Any, list[Any], bool]:
    """``(type, Annotated metadata, optional)`` of an annotation, ``Optional``/``Annotated`` peeled."""
    meta: list[Any] = []
    optional = False
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            meta.extend(tp.__metadata__)
            tp = tp.__origin__
        elif origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            optional = optional or len(args) < len(typing.get_args(tp))
            if len(args) != 1:
                return Any, meta, optional
            tp = args[0]
        else:
            return tp, meta, optional


@cache
def rules(cls: type) -> tuple[Rule, ...]:
    """The ``Rule`` of every field of the dataclass ``cls`` (resolved once per class)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    out = []
    for f in dataclasses.fields(cls):
        tp, meta, optional = _unwrap(hints.get(f.name, Any))
        choices = None
        literal = typing.get_origin(tp) is Literal
        if literal:
            choices = typing.get_args(tp)
            tp = type(choices[0]) if len({type(c) for c in choices}) == 1 else Any
        for m in meta:
            if isinstance(m, OneOf):
                choices = tuple(m.values)
        base = tp if tp in (int, float, bool, str) or dataclasses.is_dataclass(tp) else Any
        rng = next((m for m in meta if isinstance(m, Range)), None)
        note = next((m.text for m in meta if isinstance(m, Note)), rng.note if rng else "")
        out.append(Rule(f.name, base, optional, choices, literal, rng, note))
    return tuple(out)


def literal_choices(tp: Any) -> tuple:
    """The values of a ``Literal`` type (or alias), e.g. to keep a public tuple next to it."""
    return typing.get_args(_unwrap(tp)[0])


# -- errors -----------------------------------------------------------------------------------------
def full_key(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def choice_error(key: str, value: Any, allowed: tuple, note: str = "") -> ConfigError:
    """``ConfigError`` for a value outside an enumeration, with the allowed values and a did-you-mean."""
    close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    extra = f" ({note})" if note else ""
    return ConfigError(
        f"Invalid value {value!r} for {key}.{hint} Allowed values: "
        f"{', '.join(str(a) for a in allowed)}{extra}."
    )


def range_error(key: str, value: Any, rng: Range, note: str = "") -> ConfigError:
    extra = f" ({note or rng.note})" if note or rng.note else ""
    return ConfigError(f"Invalid value {value!r} for {key}: it must be {rng.describe()}{extra}.")


def _type_ok(value: Any, base: Any) -> bool:
    if base is bool:
        return isinstance(value, bool)
    if base is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if base is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if base is str:
        return isinstance(value, str)
    return True


def _allowed(rule: Rule, value: Any) -> bool:
    """``value`` is one of the field's choices; a ``str`` field stores a YAML number as its text
    (OmegaConf converts it), a ``Literal`` field does not."""
    as_text = rule.base is str and not rule.literal and isinstance(value, (int, float))
    return (str(value) if as_text else value) in rule.choices


_TYPE_WORDS = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}


# -- checks -----------------------------------------------------------------------------------------
def check_choices(cls: type, values: Mapping, key: str = "") -> None:
    """Reject a value outside a field's ``Literal``/``OneOf`` in the raw mapping ``values`` (a
    config layer, before OmegaConf merges it), recursing into nested sections; other problems are
    left to the merge and ``check_config``."""
    by_name = {r.name: r for r in rules(cls)}
    for name, value in values.items():
        rule = by_name.get(name)
        if rule is None or value is None:
            continue
        if rule.choices is not None and not isinstance(value, Mapping):
            if not _allowed(rule, value):
                raise choice_error(full_key(key, name), value, rule.choices, rule.note)
        elif dataclasses.is_dataclass(rule.base) and isinstance(value, Mapping):
            check_choices(rule.base, value, full_key(key, name))


def check_config(obj: Any, key: str = "", **context: Any) -> None:
    """Check every declared constraint of the dataclass instance ``obj`` at ``key`` (see the module
    docstring); ``context`` (e.g. ``d_model``) is passed to ``check`` hooks that name it."""
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        return
    for rule in rules(type(obj)):
        value = getattr(obj, rule.name)
        where = full_key(key, rule.name)
        if value is None and rule.optional:
            continue
        if rule.choices is not None:
            if not _allowed(rule, value):
                raise choice_error(where, value, rule.choices, rule.note)
            continue
        if dataclasses.is_dataclass(rule.base):
            check_config(value, where, **context)
            continue
        if not _type_ok(value, rule.base):
            raise ConfigError(f"Invalid value {value!r} for {where}: it must be {_TYPE_WORDS[rule.base]}.")
        if rule.range is not None and not rule.range.allows(value):
            raise range_error(where, value, rule.range, rule.note)
    hook = getattr(obj, "check", None)
    if callable(hook):
        params = inspect.signature(hook).parameters
        hook(key, **{k: v for k, v in context.items() if k in params})


def check_divides(key: str, value: int, total_key: str, total: int | None) -> None:
    """``value`` (at ``key``, e.g. attention heads) must divide ``total`` (at ``total_key``, e.g. the
    model width split evenly across the heads); ``total`` None means unknown here, so not checked."""
    if total is None or value < 1 or total % value == 0:
        return
    divisors = [d for d in range(1, total + 1) if total % d == 0]
    raise ConfigError(
        f"Invalid value {value} for {key}: it must divide {total_key}={total}. "
        f"Divisors of {total}: {', '.join(map(str, divisors[:12]))}{', ...' if len(divisors) > 12 else ''}."
    )
