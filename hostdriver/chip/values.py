"""Range-checked value types of the chip configuration (haldls style).

A value that does not fit its register field is refused here, on the host, with a ConfigError that
names the value type, the offending value, the valid range and where it was meant to go, e.g.
``CapMemValue 1023 out of range 0..1022 for NeuronCell.V_LEAK of neuron 17``. The board would
refuse it too, but only after a round trip and without naming the coordinate.

Scalars are ``int`` subclasses (``Weight(5) + 1 == 6``); whole arrays are checked at once with
``Kind.check_array`` (vectorised: the error names the first offender and counts the rest).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum
from typing import ClassVar

import numpy as np

from protocol.addressmap import CAPMEM_MAX, ReadoutSource, RowMode
from protocol.errors import ConfigError
from protocol.wire import LABEL_MASK

__all__ = [
    "BackgroundPeriod",
    "CADCOffset",
    "CapMemValue",
    "Label",
    "LabelMask",
    "MADCPeriod",
    "NeuronIndex",
    "RangedInt",
    "ReadoutSource",
    "RefractoryClock",
    "RefractoryCount",
    "RowMode",
    "RowSelect",
    "Seed",
    "SynapseAddress",
    "Weight",
    "Where",
    "check_enum_array",
    "config_error",
    "enum_value",
]

# Where a value goes: a fixed text ("MADCConfig.neuron") or, for arrays, a function of the
# offending element's index tuple ("NeuronCell.V_LEAK of neuron 17").
Where = str | Callable[[tuple[int, ...]], str] | None


def config_error(
    message: str, *, field: str | None = None, value: object = None, valid: str | None = None
) -> ConfigError:
    """A ConfigError carrying the pieces as attributes (field, value, valid) for programs."""
    err = ConfigError(message)
    err.field = field
    err.value = value
    err.valid = valid
    return err


def _where_text(where: Where, index: tuple[int, ...]) -> str | None:
    if where is None:
        return None
    if callable(where):
        return where(index)
    return where


def _as_integers(values: object, type_name: str, where: Where) -> np.ndarray:
    """int64 array of values; refuses non-integers (1.5, NaN, strings) with a ConfigError."""
    arr = np.asarray(values)
    if arr.dtype == bool:
        return arr.astype(np.int64)
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.int64)
    if np.issubdtype(arr.dtype, np.floating):
        ok = np.isfinite(arr) & (arr == np.round(arr))
        if not ok.all():
            idx = tuple(int(i) for i in np.unravel_index(int(np.argmin(ok)), arr.shape))
            bad = arr[idx] if arr.ndim else arr[()]
            place = _where_text(where, idx)
            raise config_error(
                f"{type_name} {bad!r} is not an integer" + (f" for {place}" if place else ""),
                field=place,
                value=bad,
            )
        return arr.astype(np.int64)
    raise config_error(
        f"{type_name} must be an integer, got {values!r} ({arr.dtype})"
        + (f" for {_where_text(where, ())}" if where is not None and not callable(where) else ""),
        value=values,
    )


class RangedInt(int):
    """An int that refuses values outside MIN..MAX (plus the values in ALSO)."""

    MIN: ClassVar[int] = 0
    MAX: ClassVar[int] = 0
    ALSO: ClassVar[tuple[int, ...]] = ()  # isolated extra valid values (e.g. 0 = off)
    NOTE: ClassVar[str] = ""  # appended to the range in messages

    def __new__(cls, value: object, where: Where = None) -> RangedInt:
        if isinstance(value, float) and not float(value).is_integer():
            raise config_error(
                f"{cls.__name__} {value!r} is not an integer"
                + (f" for {_where_text(where, ())}" if where else ""),
                value=value,
            )
        if not isinstance(value, int | np.integer | float):
            raise config_error(f"{cls.__name__} must be an integer, got {value!r}", value=value)
        v = int(value)
        if not (cls.MIN <= v <= cls.MAX or v in cls.ALSO):
            raise cls._range_error(v, _where_text(where, ()))
        return super().__new__(cls, v)

    @classmethod
    def valid_range(cls) -> str:
        also = "".join(f" or {a}" for a in cls.ALSO)
        return f"{cls.MIN}..{cls.MAX}{also}{cls.NOTE}"

    @classmethod
    def _range_error(cls, value: int, place: str | None, more: int = 0) -> ConfigError:
        msg = f"{cls.__name__} {value} out of range {cls.valid_range()}"
        if place:
            msg += f" for {place}"
        if more:
            msg += f" (and {more} more out of range)"
        return config_error(msg, field=place, value=value, valid=cls.valid_range())

    @classmethod
    def in_range(cls, values: np.ndarray) -> np.ndarray:
        ok = (values >= cls.MIN) & (values <= cls.MAX)
        for a in cls.ALSO:
            ok |= values == a
        return ok

    @classmethod
    def check_array(cls, values: object, where: Where = None) -> np.ndarray:
        """values as an int64 array, or ConfigError naming the first offender (by where)."""
        arr = _as_integers(values, cls.__name__, where)
        ok = cls.in_range(arr)
        if not ok.all():
            first = int(np.argmin(ok.reshape(-1)))
            idx = tuple(int(i) for i in np.unravel_index(first, arr.shape)) if arr.ndim else ()
            bad = int(arr.reshape(-1)[first])
            raise cls._range_error(bad, _where_text(where, idx), int((~ok).sum()) - 1)
        return arr

    def __repr__(self) -> str:
        return f"{type(self).__name__}({int(self)})"


class CapMemValue(RangedInt):
    """10-bit CapMem code; 1023 is reserved on the chip and refused."""

    MIN, MAX = 0, CAPMEM_MAX


class Weight(RangedInt):
    """6-bit synapse weight (sign comes from the row mode)."""

    MIN, MAX = 0, 63


class SynapseAddress(RangedInt):
    """6-bit synapse address: a synapse answers only events whose label[5:0] equals it."""

    MIN, MAX = 0, 63


class Label(RangedInt):
    """14-bit event label (neuron output, FPGA spike, background source, crossbar target)."""

    MIN, MAX = 0, LABEL_MASK


class LabelMask(RangedInt):
    """14-bit crossbar mask: a node passes an event iff (label & mask) == target."""

    MIN, MAX = 0, LABEL_MASK


class RowSelect(RangedInt):
    """5-bit row select, label[10:6]: picks driver 4*row_select + bus on a bus."""

    MIN, MAX = 0, 31


class CADCOffset(RangedInt):
    """Signed 8-bit per-channel CADC offset (two's complement in the register)."""

    MIN, MAX = -128, 127


class RefractoryCount(RangedInt):
    """8-bit refractory counter reload value (refractory time = count * 2**clock * 8 ns)."""

    MIN, MAX = 0, 255


class RefractoryClock(RangedInt):
    """4-bit refractory clock select: one count lasts 2**clock ticks of 8 ns."""

    MIN, MAX = 0, 15


class NeuronIndex(RangedInt):
    """Neuron circuit index 0..511 (as a value, e.g. the MADC's selected neuron)."""

    MIN, MAX = 0, 511


class MADCPeriod(RangedInt):
    """MADC sample period in 8 ns ticks; >= 4, 0 only while the MADC is disabled (reset)."""

    MIN, MAX = 4, 0xFFFF
    ALSO = (0,)
    NOTE = " (0 only while disabled)"


class BackgroundPeriod(RangedInt):
    """Background source period / mean interval in ticks; >= 1, 0 only while disabled (reset)."""

    MIN, MAX = 1, 0xFFFFFFFF
    ALSO = (0,)
    NOTE = " (0 only while disabled)"


class Seed(RangedInt):
    """32-bit seed of a Poisson background source."""

    MIN, MAX = 0, 0xFFFFFFFF


def enum_value(enum: type[IntEnum], value: object, where: Where = None) -> IntEnum:
    """value as a member of enum (by member, int or name), or ConfigError naming the choices."""
    if isinstance(value, str):
        try:
            return enum[value.upper()]
        except KeyError:
            pass
    else:
        try:
            return enum(int(value))  # type: ignore[arg-type]
        except (ValueError, TypeError):
            pass
    choices = ", ".join(f"{m.value} {m.name}" for m in enum)
    place = _where_text(where, ())
    lo, hi = min(enum).value, max(enum).value
    raise config_error(
        f"{enum.__name__} {value!r} out of range {lo}..{hi} ({choices})"
        + (f" for {place}" if place else ""),
        field=place,
        value=value,
        valid=f"{lo}..{hi}",
    )


def check_enum_array(enum: type[IntEnum], values: object, where: Where = None) -> np.ndarray:
    """values as an int64 array whose elements are all members of enum, else ConfigError."""
    arr = _as_integers(values, enum.__name__, where)
    members = np.array(sorted(m.value for m in enum), np.int64)
    ok = np.isin(arr, members)
    if not ok.all():
        first = int(np.argmin(ok.reshape(-1)))
        idx = tuple(int(i) for i in np.unravel_index(first, arr.shape)) if arr.ndim else ()
        bad = int(arr.reshape(-1)[first])
        choices = ", ".join(f"{m.value} {m.name}" for m in enum)
        place = _where_text(where, idx)
        more = int((~ok).sum()) - 1
        raise config_error(
            f"{enum.__name__} {bad} out of range {members[0]}..{members[-1]} ({choices})"
            + (f" for {place}" if place else "")
            + (f" (and {more} more out of range)" if more else ""),
            field=place,
            value=bad,
            valid=f"{members[0]}..{members[-1]}",
        )
    return arr
