"""Units clinicians write for ketamine doses and body weight, with exact arithmetic.

A closed subset of UCUM plus the spellings seen in orders (mcg, hr, lbs). Values are ``Decimal``
as read; conversion factors are ``Fraction`` so that every conversion and comparison is exact
(1 mcg/kg/min is exactly 0.06 mg/kg/h; 1/24 of a day is not a finite decimal).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from functools import lru_cache
from typing import Literal

from ._errors import ImpossibleValueError, UnitError, WrongDimensionError

Amount = Literal["mass", "volume"]

# factor to milligrams
MASS_UNITS: dict[str, Fraction] = {
    "mg": Fraction(1),
    "g": Fraction(1000),
    "kg": Fraction(1_000_000),
    "ug": Fraction(1, 1000),
    "mcg": Fraction(1, 1000),
    "µg": Fraction(1, 1000),
    "μg": Fraction(1, 1000),
    "[lb_av]": Fraction("453592.37"),
    "lb": Fraction("453592.37"),
    "lbs": Fraction("453592.37"),
}
# factor to millilitres
VOLUME_UNITS: dict[str, Fraction] = {"ml": Fraction(1), "l": Fraction(1000)}
# duration in hours
TIME_UNITS: dict[str, Fraction] = {
    "h": Fraction(1),
    "hr": Fraction(1),
    "hour": Fraction(1),
    "min": Fraction(1, 60),
    "s": Fraction(1, 3600),
    "sec": Fraction(1, 3600),
    "d": Fraction(24),
    "day": Fraction(24),
}

_MG_PER_KG = Fraction(1_000_000)


@dataclass(frozen=True, slots=True)
class Unit:
    """A parsed unit: an amount (mass or volume), optionally per kg of body weight and per time."""

    text: str
    amount: Amount
    factor: Fraction  # to mg (mass) or mL (volume)
    per_kg: bool = False
    per_hours: Fraction | None = None  # the time denominator in hours; None when not a rate

    @property
    def is_rate(self) -> bool:
        return self.per_hours is not None

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class Quantity:
    value: Decimal
    unit: Unit

    def __str__(self) -> str:
        """The quantity exactly as written (an order is restated as ordered, never rounded): 0.005 g."""
        return f"{format_exact(self.value)} {self.unit.text}"


MAX_MAGNITUDE = 12  # |exponent| of any clinical number we accept: 1e-12 .. 1e12


def bounded(number: Decimal, field: str) -> Decimal:
    """A number small enough for exact arithmetic (1e99999999 would build a 100-million-digit integer)."""
    if number.is_finite() and number and abs(number.adjusted()) > MAX_MAGNITUDE:
        raise ImpossibleValueError(field, f"number out of range: {number}")
    return number


# A number as people write it: ASCII digits, a sign and a decimal point (and, where the caller allows, an
# exponent). Python's Decimal() and int() also read "7_0" as 70 and other scripts' digits ("٧٠", full-width
# "７０") as 70, and DuckDB reads "0_3" as 3: a slip of the keyboard must never become a weight or a dose.
# Every number read from text (case documents, the page, command-line flags, site files) comes through here.
_PLAIN = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_PLAIN_WITH_EXPONENT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_WHOLE = re.compile(r"[+-]?[0-9]+")
PLAIN_NUMBER = "a plain number such as 80 or 0.5 (digits, a sign and a decimal point; no '_')"


def plain_decimal(text: str, *, exponent: bool = False) -> Decimal | None:
    """The number ``text`` writes plainly (surrounding spaces ignored), exactly; None when it is not one
    (``7_0``, ``٧٠``, ``NaN``, ``eighty``). ``exponent``: ``1e3`` is a plain number too (JSON allows it)."""
    written = text.strip()
    if not (_PLAIN_WITH_EXPONENT if exponent else _PLAIN).fullmatch(written):
        return None
    return Decimal(written)


def plain_whole(text: str) -> int | None:
    """A whole number written in ASCII digits (with an optional sign); None otherwise (``1_0``, ``１０``)."""
    written = text.strip()
    return int(written) if _WHOLE.fullmatch(written) else None


def _norm(token: str) -> str:
    token = token.strip()
    return token if token == "[lb_av]" else token.lower()


def _split(text: str) -> list[str]:
    cleaned = text.strip().replace(" ", "")
    # mg/(kg.h) and mg/kg.h are UCUM for mg/kg/h
    match = re.fullmatch(r"([^/]+)/\(?([^/().]+)\.([^/().]+)\)?", cleaned)
    if match:
        return [match.group(1), match.group(2), match.group(3)]
    return cleaned.split("/")


@lru_cache(maxsize=512)
def parse_unit(text: str) -> Unit:
    """Parse a unit such as ``mg``, ``mcg/kg/min``, ``mL/h`` or ``[lb_av]``; raise ``UnitError``."""
    parts = [_norm(p) for p in _split(text)] if text else []
    if not parts or not parts[0]:
        raise UnitError("unit", f"no unit given ({text!r})")
    head, rest = parts[0], parts[1:]
    if head in MASS_UNITS:
        amount: Amount = "mass"
        factor = MASS_UNITS[head]
    elif head in VOLUME_UNITS:
        amount, factor = "volume", VOLUME_UNITS[head]
    else:
        raise UnitError("unit", f"unknown unit {text!r}")
    per_kg = False
    per_hours: Fraction | None = None
    for part in rest:
        if part == "kg" and not per_kg:
            per_kg = True
        elif part in TIME_UNITS and per_hours is None:
            per_hours = TIME_UNITS[part]
        else:
            raise UnitError("unit", f"unknown unit {text!r}")
    return Unit(text=text.strip(), amount=amount, factor=factor, per_kg=per_kg, per_hours=per_hours)


def weight_in_kg(value: Decimal, unit_text: str, field: str = "weight") -> Fraction:
    """A body weight in kilograms, exactly. The unit must be a plain mass."""
    try:
        unit = parse_unit(unit_text)
    except UnitError as exc:
        raise UnitError(field, exc.message) from None
    if unit.amount != "mass" or unit.per_kg or unit.is_rate:
        raise WrongDimensionError(
            field, f"a body weight needs a mass unit (kg, g, [lb_av]), not {unit_text!r}"
        )
    return Fraction(value) * unit.factor / _MG_PER_KG


_DURATION: dict[str, Fraction] = {**TIME_UNITS, "wk": Fraction(24 * 7), "week": Fraction(24 * 7)}


def duration_in_hours(value: Decimal, unit_text: str, field: str = "duration") -> Fraction:
    """How long something runs, in hours, exactly: ``4 h``, ``90 min``, ``2 d`` (UCUM s, min, h, d, wk).
    Months and years have no fixed length and are refused."""
    hours = _DURATION.get(_norm(unit_text))
    if hours is None:
        raise UnitError(field, f"a duration needs a time unit (min, h, d), not {unit_text!r}")
    if not value.is_finite() or value <= 0:
        raise ImpossibleValueError(field, f"a duration must be above zero, not {value}")
    return Fraction(bounded(value, field)) * hours


def amount_per_dose(quantity: Quantity, concentration_mg_per_ml: Fraction | None) -> Fraction | None:
    """The amount in mg (mg/kg when per kg; per hour when a rate); None for a volume without concentration."""
    unit = quantity.unit
    amount = Fraction(quantity.value)
    if unit.factor != 1:  # (a multiplication by one costs as much as any other: skipped)
        amount *= unit.factor
    if unit.amount == "volume":
        if concentration_mg_per_ml is None:
            return None
        amount *= concentration_mg_per_ml
    if unit.per_hours is not None and unit.per_hours != 1:
        amount /= unit.per_hours
    return amount


def dose_amounts(
    quantity: Quantity, concentration_mg_per_ml: Fraction | None, weight_kg: Fraction | None
) -> tuple[Fraction | None, Fraction | None]:
    """(mg or mg/h, mg/kg or mg/kg/h) of a dose, exactly: the numbers every limit is compared with. None where
    the concentration (a volume) or the weight (the other of the two) is missing."""
    raw = amount_per_dose(quantity, concentration_mg_per_ml)
    if raw is None:
        return None, None
    if quantity.unit.per_kg:
        return (raw * weight_kg if weight_kg is not None else None), raw
    return raw, (raw / weight_kg if weight_kg is not None else None)


def concentration_mg_per_ml(numerator: Quantity, denominator: Quantity) -> Fraction:
    """A strength such as 50 mg / 1 mL as mg per mL."""
    if numerator.unit.amount != "mass" or numerator.unit.per_kg or numerator.unit.is_rate:
        raise WrongDimensionError("concentration", f"the strength needs a mass, not {numerator.unit.text!r}")
    if denominator.unit.amount != "volume" or denominator.unit.per_kg or denominator.unit.is_rate:
        raise WrongDimensionError(
            "concentration", f"the strength needs a volume, not {denominator.unit.text!r}"
        )
    if denominator.value <= 0 or numerator.value <= 0:
        raise WrongDimensionError("concentration", "the strength must be positive")
    return (Fraction(numerator.value) * numerator.unit.factor) / (
        Fraction(denominator.value) * denominator.unit.factor
    )


def format_number(value: Decimal | Fraction | int, places: int = 2) -> str:
    """At most ``places`` decimals (half up), no trailing zeros, thousands grouped: 28, 0.35, 16.67, 4,000.

    Half up (0.125 -> 0.13, -0.125 -> -0.12) for every type: a Decimal is rounded as the exact Fraction it
    is, so the same value reads the same whether it was read (Decimal) or computed (Fraction).
    """
    if isinstance(value, Decimal):
        value = Fraction(value)  # exact; Decimal.quantize would round half even by default
    numerator, denominator = value.numerator, value.denominator  # an int is its own numerator, over 1
    if denominator == 1:
        return _grouped(str(abs(numerator)), negative=numerator < 0)
    rounded = _scaled_half_up(numerator, denominator, places)
    return format_decimal(Fraction(rounded, 10**places))


def format_decimal(value: Fraction) -> str:
    """A finite decimal written exactly, without needless zeros, thousands grouped: 4,000, 0.005, 24.447.

    Every number the texts show is first rounded (``shown_*``) to a finite decimal, then written by this."""
    scale = 1
    while (value * scale).denominator != 1:
        scale *= 10
        if scale > 10**40:
            raise ValueError(f"not a finite decimal: {value}")
    scaled = int(value * scale)
    places = len(str(scale)) - 1
    whole, decimals = divmod(abs(scaled), scale)
    text = _grouped(str(whole))
    if places:
        digits = f"{decimals:0{places}d}".rstrip("0")
        if digits:
            text += "." + digits
    return f"-{text}" if scaled < 0 else text


def _grouped(whole: str, *, negative: bool = False) -> str:
    """Thousands separated by commas (ISMP: 5,000 units, never 5000): 4,000; 12,500; 950."""
    groups: list[str] = []
    while len(whole) > 3:
        whole, groups = whole[:-3], [whole[-3:], *groups]
    text = ",".join([whole, *groups])
    return f"-{text}" if negative else text


def format_exact(value: Decimal) -> str:
    """A decimal exactly as its value, thousands grouped, without exponent or needless zeros: 40, 0.005,
    0.352, 4,000 (4E+1 -> 40)."""
    if not value.is_finite():
        return str(value)
    return format_decimal(Fraction(value))


MOST_PLACES = 6  # the most decimals format_apart shows; past them it rounds away from the other number


def format_apart(
    value: Fraction, other: Fraction | Decimal | None, places: int = 2, most: int = MOST_PLACES
) -> str:
    """``value`` rounded for display, never reading the same as ``other``, the number it is compared with.

    ``places`` decimals (half up) as a rule; where that would make a value that differs from ``other`` read
    like it, as many more decimals as tell them apart: 28.19 mg for 80 kg is 0.352375 mg/kg, which reads
    0.352 beside the 0.35 mg/kg limit, not "0.35 mg/kg is over the 0.35 mg/kg limit". Half-up rounding keeps
    order, so the digits that tell the two apart also put the value on its true side of ``other``. Should
    ``most`` decimals not be enough, the value is rounded away from ``other`` (up when above it) at ``most``.
    (Doses beside their limits use ``shown_beside``, which the JSON numbers follow too.)
    """
    if other is None or value == other:
        return format_number(value, places)
    digits = _places_apart(value, Fraction(other), places, most)
    if digits is not None:
        return format_number(value, digits)
    scaled = value * 10**most
    away = math.ceil(scaled) if value > Fraction(other) else math.floor(scaled)
    return format_number(Fraction(away, 10**most), most)


def _places_apart(value: Fraction, other: Fraction, places: int, most: int) -> int | None:
    """The fewest decimals (from ``places``) at which ``value`` and ``other``, rounded half up, differ."""
    for digits in range(places, most + 1):
        mine = _scaled_half_up(value.numerator, value.denominator, digits)
        if mine != _scaled_half_up(other.numerator, other.denominator, digits):
            return digits
    return None


def _scaled_half_up(numerator: int, denominator: int, places: int) -> int:
    """numerator/denominator times 10**places, rounded half up to an integer (integer arithmetic only)."""
    scale: int = 10**places
    return (numerator * scale * 2 + denominator) // (2 * denominator)


# --- the numbers the texts and the JSON show (README, "How numbers are shown") ----------------------------
#
# Every computed number is rounded once, here, to the finite decimal it is shown as; the texts write that
# decimal and the JSON gives it as a number. The JSON has at most 2 decimals (the contract): where a text
# needs more to keep a dose apart from its limit, the JSON number is the text's rounded on to 2 decimals in
# the same direction, so the two never disagree on which side of a limit a number is.


def floor_to(value: Fraction, places: int) -> Fraction:
    """Rounded down to ``places`` decimals."""
    return Fraction(math.floor(value * 10**places), 10**places)


def ceil_to(value: Fraction, places: int) -> Fraction:
    """Rounded up to ``places`` decimals."""
    return Fraction(math.ceil(value * 10**places), 10**places)


def half_up_to(value: Fraction, places: int) -> Fraction:
    return Fraction(_scaled_half_up(value.numerator, value.denominator, places), 10**places)


def shown_max(
    value: Fraction, other: Fraction | None = None, places: int = 2, most: int = MOST_PLACES
) -> Fraction:
    """A maximum as shown: rounded down, so that a dose of the amount shown is within it (0.35 mg/kg for
    62.5 kg is 21.875 mg, shown 21.87: 21.88 mg would be over). ``other`` is a dose written exactly as
    ordered in the same unit: where two decimals rounded down would put it above the maximum shown though it
    is within (24.447 mg ordered, max 24.4475 mg, "max 24.44"), as many more decimals as keep it under it
    ("max 24.447"). A dose over the maximum stays over any maximum rounded down. A maximum above zero is
    never shown as 0: it gets the decimals of its first digit (0.004 mg)."""
    places = _significant(value, places, most)
    for digits in range(places, most + 1):
        shown = floor_to(value, digits)
        if other is None or other > value or shown >= other:
            return shown
    return floor_to(value, most) if floor_to(value, most) >= (other or 0) else value


def shown_beside(
    value: Fraction, limit: Fraction | None, places: int = 2, most: int = MOST_PLACES
) -> Fraction:
    """A dose beside the limit it is compared with, as shown: two decimals, half up, as a rule; where that
    would make it read like the limit, the decimals that tell them apart (28.19 mg for 80 kg is 0.352375
    mg/kg, shown 0.352 beside the 0.35 mg/kg limit; 16.67 mcg/kg/min is 1.0002 mg/kg/h beside 1 mg/kg/h).
    Half-up rounding keeps order, so the digits that tell the two apart also keep it on its own side of the
    limit. Should ``most`` decimals not do, it is rounded away from the limit. At the limit it reads as the
    limit does (a maximum, rounded down). Without a limit: two decimals, half up. A dose above zero is never
    shown as 0."""
    places = _significant(value, places, most)
    if limit is None:
        return half_up_to(value, places)
    if value == limit:
        return shown_max(limit, places=places)
    digits = _places_apart(value, limit, places, most)
    if digits is not None:
        return half_up_to(value, digits)
    return floor_to(value, most) if value < limit else ceil_to(value, most)


def _significant(value: Fraction, places: int, most: int) -> int:
    """``places``, or more where a value above zero would otherwise be shown as 0 (its first digit's)."""
    while places < most and 0 < value < Fraction(1, 10**places):
        places += 1
    return places


def shown_min(value: Fraction, places: int = 2) -> Fraction:
    """A minimum as shown: rounded up, so that the amount shown meets it (a weight from which a dose is
    within its limit: 20 mg at 0.35 mg/kg needs 57.142... kg, shown 57.2 kg at one decimal)."""
    return ceil_to(value, places)


def shown_weight(kg: Fraction) -> Fraction:
    """A body weight as shown: rounded down to 2 decimals, like the maxima worked out from it, so that a
    limit per kg times the weight shown is never above the maximum shown (61.425 kg reads 61.42 kg beside
    "max 61.42 mg/h" at 1 mg/kg/h, not 61.43)."""
    return floor_to(kg, 2)


def json_number(shown: Fraction, direction: str = "half") -> float:
    """A shown number for the JSON, at most 2 decimals: as shown when it has no more, otherwise rounded on in
    its direction ("down" for a maximum or a dose within its limit, "up" for a dose over it or a minimum)."""
    if direction == "down":
        return float(floor_to(shown, 2))
    if direction == "up":
        return float(ceil_to(shown, 2))
    return float(half_up_to(shown, 2))


def format_max(
    value: Fraction, other: Fraction | None = None, places: int = 2, most: int = MOST_PLACES
) -> str:
    """A maximum dose for display (``shown_max``), written out."""
    return format_decimal(shown_max(value, other, places, most))


def format_beside(value: Fraction, limit: Fraction | None) -> str:
    """A dose beside its limit for display (``shown_beside``), written out."""
    return format_decimal(shown_beside(value, limit))


def round_max_for_display(value: Fraction, places: int = 2) -> float:
    """A maximum as a JSON number: rounded down (see ``shown_max``); comparisons never use it."""
    return float(floor_to(value, places))


def _fraction_to_decimal(value: Fraction, places: int) -> Decimal:
    return Decimal(_scaled_half_up(value.numerator, value.denominator, places)).scaleb(-places)


def round_for_display(value: Fraction, places: int = 2) -> float:
    """A JSON number rounded for display; comparisons never use it."""
    return float(_fraction_to_decimal(value, places))


def parse_concentration(value: Decimal, unit_text: str, field: str = "concentration") -> Fraction:
    """A strength written as one quantity, e.g. 50 mg/mL or 10 mcg/mL, as mg per mL."""
    numerator, _, denominator = unit_text.partition("/")
    try:
        mass, volume = parse_unit(numerator), parse_unit(denominator or "?")
    except UnitError:
        raise UnitError(field, f"a concentration needs a unit such as mg/mL, not {unit_text!r}") from None
    try:
        return concentration_mg_per_ml(Quantity(value, mass), Quantity(Decimal(1), volume))
    except WrongDimensionError as exc:
        raise WrongDimensionError(field, exc.message) from None
