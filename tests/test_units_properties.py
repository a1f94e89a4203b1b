"""Property-based tests of dose arithmetic: units, monotonicity and weight scaling."""

import math
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from builders import facts
from ketamine_cds import DoseStatus, Quantity, Route, Setting, UnitError, assess, ketamine_order, parse_unit
from ketamine_cds._units import (
    amount_per_dose,
    format_apart,
    format_beside,
    format_decimal,
    format_exact,
    format_max,
    format_number,
    json_number,
    round_max_for_display,
    shown_beside,
    shown_max,
    shown_min,
    shown_weight,
    weight_in_kg,
)

# One dose written exactly in each unit: n steps of 0.003 mg/kg/h (= 0.05 mcg/kg/min), or of 0.001 mg/kg.
RATE_STEPS = {
    "mg/kg/h": "0.003",
    "mcg/kg/h": "3",
    "ug/kg/h": "3",
    "mcg/kg/min": "0.05",
    "mg/kg/min": "0.00005",
    "mg/kg/d": "0.072",
    "mg/(kg.h)": "0.003",
}
BOLUS_STEPS = {"mg/kg": "0.001", "mcg/kg": "1", "ug/kg": "1", "g/kg": "0.000001"}


def _dec(text: str) -> Decimal:
    """A number as the texts write it (thousands grouped with commas) read back."""
    return Decimal(text.replace(",", ""))


per_kg_values = st.decimals(min_value=Decimal("0.001"), max_value=Decimal("5"), places=3)
weights = st.decimals(min_value=Decimal("0.5"), max_value=Decimal("500"), places=1)
thousandths = st.integers(min_value=1, max_value=5000)


def _status(value: Fraction | Decimal, unit: str, weight: Decimal = Decimal(80)) -> DoseStatus:
    dec = value if isinstance(value, Decimal) else Decimal(value.numerator) / Decimal(value.denominator)
    order = ketamine_order(route=Route.INTRAVENOUS, dose=Quantity(dec, parse_unit(unit)))
    check = assess(
        facts(order=order, weight_kg=Fraction(weight), setting=Setting.NON_INTENSIVE_CARE)
    ).dose_check
    assert check is not None
    return check.status


@given(thousandths)
def test_same_infusion_in_any_unit_gets_the_same_verdict(n: int) -> None:
    statuses = {unit: _status(n * Decimal(step), unit) for unit, step in RATE_STEPS.items()}
    assert len(set(statuses.values())) == 1, statuses
    assert (statuses["mg/kg/h"] is DoseStatus.EXCEEDS) is (n * 3 > 1000)


@given(thousandths)
def test_same_bolus_in_any_unit_gets_the_same_verdict(n: int) -> None:
    statuses = {unit: _status(n * Decimal(step), unit) for unit, step in BOLUS_STEPS.items()}
    assert len(set(statuses.values())) == 1, statuses
    assert (statuses["mg/kg"] is DoseStatus.EXCEEDS) is (n > 350)


@given(per_kg_values, per_kg_values)
def test_raising_a_dose_never_turns_exceeds_into_within(a: Decimal, b: Decimal) -> None:
    low, high = sorted((a, b))
    if _status(Fraction(low), "mg/kg") is DoseStatus.EXCEEDS:
        assert _status(Fraction(high), "mg/kg") is DoseStatus.EXCEEDS
    if _status(Fraction(low), "mg/kg/h") is DoseStatus.EXCEEDS:
        assert _status(Fraction(high), "mg/kg/h") is DoseStatus.EXCEEDS


@given(
    weights,
    st.decimals(min_value=Decimal("1"), max_value=Decimal("200"), places=2),
    st.integers(min_value=2, max_value=9),
)
def test_scaling_weight_and_absolute_dose_together_keeps_the_verdict(w: Decimal, mg: Decimal, k: int) -> None:
    if w * k <= 500:
        assert _status(Fraction(mg), "mg", w) is _status(Fraction(mg) * k, "mg", w * k)


@given(weights)
def test_weight_units_agree(kg: Decimal) -> None:
    assert weight_in_kg(kg * 1000, "g") == weight_in_kg(kg, "kg")
    pounds = Fraction(kg) / Fraction("0.45359237")
    in_kg = weight_in_kg(Decimal(pounds.numerator) / Decimal(pounds.denominator), "[lb_av]")
    assert abs(in_kg - Fraction(kg)) <= Fraction(kg) / 10**20  # the pounds were rounded to 28 digits


def test_one_mg_per_kg_per_h_is_16_67_mcg_per_kg_per_min_for_display() -> None:
    rate = amount_per_dose(Quantity(Decimal(1), parse_unit("mg/kg/h")), None)
    assert rate is not None and format_number(rate * 1000 / 60) == "16.67"
    assert amount_per_dose(Quantity(Decimal(1), parse_unit("mcg/kg/min")), None) == Fraction(6, 100)


@pytest.mark.parametrize("unit", ["mg/kg/week", "tablets", "mmol", "mg/m2", "", "mg/kg/kg", "mg/h/h", "IU"])
def test_unknown_units_are_rejected(unit: str) -> None:
    with pytest.raises(UnitError):
        parse_unit(unit)


@pytest.mark.parametrize("unit", ["MG", "Mcg/Kg/Min", "mg/hr", "µg/kg/min", "mL/h", "[lb_av]", "lbs"])
def test_spellings_clinicians_write_are_accepted(unit: str) -> None:
    assert parse_unit(unit).text == unit


@given(
    numerator=st.integers(min_value=-(10**9), max_value=10**9),
    denominator=st.integers(min_value=1, max_value=10**6),
    places=st.integers(min_value=0, max_value=4),
)
def test_a_fraction_is_written_as_its_decimal_rounded_half_up(
    numerator: int, denominator: int, places: int
) -> None:
    value = Fraction(numerator, denominator)
    step = Fraction(1, 10**places)
    rounded = math.floor(value / step + Fraction(1, 2)) * step  # the nearest multiple, halves upward
    expected = Decimal(rounded.numerator) / Decimal(rounded.denominator)
    text = format_number(value, places)
    assert _dec(text) == expected
    assert "." not in text or (not text.endswith("0") and len(text.split(".")[1]) <= places)
    assert format_number(expected, places) == text  # a Decimal and a Fraction of one value read alike


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Fraction(28), "28"),
        (Fraction(7, 20), "0.35"),
        (Fraction(50, 3), "16.67"),
        (Fraction(-1, 8), "-0.12"),
        (Fraction(1, 1000), "0"),
        (Fraction(-1, 1000), "0"),
        (Fraction(5, 1000), "0.01"),
        (Decimal("0.50"), "0.5"),
        (Decimal("0.125"), "0.13"),  # half up, as the docstring says: half even would give 0.12
        (Decimal("2.665"), "2.67"),
        (Decimal("-0.125"), "-0.12"),  # halves upward, as a Fraction is rounded
    ],
)
def test_numbers_read_as_a_clinician_writes_them(value: Fraction | Decimal, text: str) -> None:
    assert format_number(value) == text


@given(
    st.decimals(allow_nan=False, allow_infinity=False, min_value=-(10**6), max_value=10**6, places=6),
    st.integers(min_value=0, max_value=4),
)
def test_a_decimal_reads_as_the_fraction_it_is(value: Decimal, places: int) -> None:
    assert format_number(value, places) == format_number(Fraction(value), places)


@pytest.mark.parametrize(
    ("written", "text"),
    [
        ("0.005", "0.005"),
        ("0.352", "0.352"),
        ("40", "40"),
        ("4E+1", "40"),
        ("0.0050", "0.005"),
        ("25.000", "25"),
        ("1E-7", "0.0000001"),
        ("0.3500000001", "0.3500000001"),
    ],
)
def test_an_ordered_dose_is_restated_exactly_as_ordered(written: str, text: str) -> None:
    assert format_exact(Decimal(written)) == text
    assert str(Quantity(Decimal(written), parse_unit("mg/kg"))) == f"{text} mg/kg"


fractions = st.fractions(min_value=0, max_value=1000, max_denominator=10**7)


@given(fractions, fractions)
def test_a_rounded_value_never_reads_as_the_number_it_is_compared_with(
    value: Fraction, other: Fraction
) -> None:
    shown = Fraction(_dec(format_apart(value, other)))
    if value == other:
        assert format_apart(value, other) == format_number(value)
    else:  # on its own side of the other number, whether that is shown exactly or also kept apart
        assert (shown > other) is (value > other) and shown != other
        assert (shown > Fraction(_dec(format_apart(other, value)))) is (value > other)
    if format_number(value) != format_number(other):
        assert format_apart(value, other) == format_number(value)  # two decimals when they already differ


@pytest.mark.parametrize(
    ("value", "limit", "text"),
    [
        (Fraction("28.19") / 80, Fraction("0.35"), "0.352"),  # 0.352375 mg/kg: not "0.35 ... over 0.35"
        (Fraction("24.45") / Fraction("69.85"), Fraction("0.35"), "0.35004"),
        (Fraction("0.3499"), Fraction("0.35"), "0.3499"),  # below the limit, it reads below it
        (Fraction("0.35") + Fraction(1, 10**9), Fraction("0.35"), "0.350001"),  # past 6 decimals: away
        (Fraction("0.35") - Fraction(1, 10**9), Fraction("0.35"), "0.349999"),
        (Fraction("0.36"), Fraction("0.35"), "0.36"),
        (Fraction("0.35"), Fraction("0.35"), "0.35"),
        (Fraction(50, 3), None, "16.67"),
    ],
)
def test_a_value_beside_a_limit_gets_the_decimals_that_tell_them_apart(
    value: Fraction, limit: Fraction | None, text: str
) -> None:
    assert format_apart(value, limit) == text


maxima = st.fractions(min_value=Fraction(1, 100), max_value=Fraction(2000), max_denominator=10**6)
ordered = st.decimals(min_value=Decimal("0.001"), max_value=Decimal("2000"), places=4)


@given(maxima, ordered)
def test_a_maximum_shown_is_never_above_it_nor_under_a_dose_within_it(
    maximum: Fraction, dose: Decimal
) -> None:
    shown = Fraction(_dec(format_max(maximum, Fraction(dose))))
    assert shown <= maximum  # ordering the amount shown is within the limit
    if Fraction(dose) <= maximum:
        assert Fraction(dose) <= shown  # a dose within the limit never reads as over the maximum shown
    alone = Fraction(_dec(format_max(maximum)))
    assert alone <= maximum and maximum - alone < Fraction(1, 100)
    assert Fraction(str(round_max_for_display(maximum))) == alone


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Fraction(4000), "4,000"),
        (Fraction(20000), "20,000"),
        (Fraction("1234567.891"), "1,234,567.89"),
        (Fraction(999), "999"),
        (Fraction(-5000), "-5,000"),
    ],
)
def test_thousands_are_grouped_as_ismp_asks(value: Fraction, text: str) -> None:
    assert format_number(value) == text
    assert format_exact(Decimal("4000")) == "4,000" and format_exact(Decimal("0.005")) == "0.005"
    assert str(Quantity(Decimal("4000"), parse_unit("mg/h"))) == "4,000 mg/h"


@pytest.mark.parametrize(
    ("value", "limit", "text", "json"),
    [
        (Fraction("28.19") / 80, Fraction("0.35"), "0.352", 0.36),  # 0.352375 over: never "0.35"; JSON up
        (Fraction("0.325"), Fraction("0.35"), "0.33", 0.33),  # half up where it reads apart from the limit
        (Fraction("0.3496"), Fraction("0.35"), "0.3496", 0.34),  # half up would read 0.35; JSON down
        (Fraction("16.67") * 60 / 1000, Fraction(1), "1.0002", 1.01),  # reported exactly (reference)
        (Fraction("0.3499"), Fraction("0.35"), "0.3499", 0.34),
        (Fraction("0.35"), Fraction("0.35"), "0.35", 0.35),  # at the limit is within
        (Fraction("24.4475"), Fraction("24.4475"), "24.44", 24.44),
        (Fraction(50, 3), None, "16.67", 16.67),
    ],
)
def test_a_dose_beside_its_limit_is_shown_on_its_side_in_text_and_json(
    value: Fraction, limit: Fraction | None, text: str, json: float
) -> None:
    assert format_beside(value, limit) == text
    direction = "half" if limit is None else ("down" if value <= limit else "up")
    assert json_number(shown_beside(value, limit), direction) == json


doses = st.fractions(min_value=Fraction(1, 1000), max_value=Fraction(5000), max_denominator=10**6)


@given(doses, doses)
def test_text_and_json_agree_on_every_dose_beside_its_limit(value: Fraction, limit: Fraction) -> None:
    shown = shown_beside(value, limit)
    assert (shown > limit) is (value > limit)
    if value == limit:
        assert shown == shown_max(limit)  # at the limit it reads as the maximum shown
    within = value <= limit
    number = json_number(shown, "down" if within else "up")
    # the JSON number is the text's, or the text's rounded on in the same direction to 2 decimals
    assert number == float(shown) or (within and number < shown) or (not within and number > shown)
    assert (Fraction(str(number)) > limit) is (value > limit)  # never on the other side of the limit
    assert _dec(format_decimal(shown)) == Decimal(shown.numerator) / Decimal(shown.denominator)


def test_a_weight_is_shown_rounded_down_like_the_maxima_worked_out_from_it() -> None:
    kg = Fraction("61.425")
    assert shown_weight(kg) == Fraction("61.42") == shown_max(kg * 1)  # 1 mg/kg/h: the same number
    assert shown_min(Fraction(20) / Fraction("0.35"), 1) == Fraction("57.2")  # within from 57.2 kg
