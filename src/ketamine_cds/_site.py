"""A hospital's own ketamine protocol on top of the guideline: one small TOML file (README, "Site protocols").

Read and checked here once; the engine, the adapters and the doors only consult the resulting ``Site``. A site
may make a dose limit tighter (a per-kg cap, or an absolute cap whatever the weight), count more locations as
intensive monitoring, hide information-only statements, add override reasons, and change product defaults.
It is never looser than the guideline by accident: a cap above the guideline's limit is refused unless its
entry says ``allow_above_guideline = true``, and then every finding that uses it says so.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

from ._errors import InputError
from ._facts import DoseKind, Setting
from ._kb import KnowledgeBase
from ._units import plain_decimal

# the cap keys of a dose entry: (kind, per kg?) -> key; which kinds a statement has comes from the guideline
_CAP_KEYS: Mapping[str, tuple[DoseKind, bool]] = {
    "max_mg_per_kg": (DoseKind.BOLUS, True),
    "max_mg": (DoseKind.BOLUS, False),
    "max_mg_per_kg_per_h": (DoseKind.INFUSION, True),
    "max_mg_per_h": (DoseKind.INFUSION, False),
}
_TOP_KEYS = frozenset(
    {"site", "dose", "intensive-monitoring", "statements", "override-reasons", "weight", "display"}
)
_CODE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


class SiteError(InputError):
    """A site file that cannot be used: the service refuses to start and the command exits 2."""


@dataclass(frozen=True, slots=True)
class DoseCap:
    """A site's caps for one dose statement and kind: per kg (per kg and hour), and absolute (mg, mg/h)."""

    statement: str
    kind: DoseKind
    max_per_kg: Fraction | None = None
    max_amount: Fraction | None = None
    allow_above_guideline: bool = False


@dataclass(frozen=True, slots=True)
class OverrideReason:
    code: str
    display: str


@dataclass(frozen=True)
class Site:
    name: str
    version: str
    digest: str
    caps: Mapping[tuple[str, DoseKind], DoseCap] = field(default_factory=dict)
    monitoring_codes: frozenset[tuple[str, str]] = frozenset()  # (system, code) of a Location
    monitoring_names: frozenset[str] = frozenset()  # Location names, compared ignoring case and spaces
    hidden: frozenset[str] = frozenset()
    override_reasons: tuple[OverrideReason, ...] = ()
    weight_max_age_days: int | None = None
    bolus_step_mg: Fraction | None = None
    concentrations_mg_per_ml: tuple[Fraction, ...] = ()

    def cap(self, statement: str, kind: DoseKind) -> DoseCap | None:
        return self.caps.get((statement, kind))

    def is_monitoring_location(self, codes: list[tuple[str | None, str]], names: list[str]) -> bool:
        """A Location the site counts as intensive monitoring, by (system, code) or by name."""
        if any((system or "", code) in self.monitoring_codes for system, code in codes):
            return True
        return any(_name_key(n) in self.monitoring_names for n in names)

    @property
    def label(self) -> str:
        return f"{self.name} ({self.version})"


def _name_key(name: str) -> str:
    return " ".join(name.split()).casefold()


def load_site(path: str | Path, kb: KnowledgeBase) -> Site:
    """Read and check a site file; a ``SiteError`` names the key that is wrong."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise SiteError("--site", f"cannot read the site file {str(path)!r}: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SiteError("--site", f"the site file is not valid TOML: {exc}") from None
    return site_from_toml(data, kb, digest="sha256:" + hashlib.sha256(raw).hexdigest()[:16])


def site_from_toml(data: Mapping[str, Any], kb: KnowledgeBase, *, digest: str) -> Site:
    _only(data, _TOP_KEYS, "")
    head = _table(data.get("site"), "site")
    _only(head, {"name", "version"}, "site.")
    return Site(
        name=_text(head.get("name"), "site.name"),
        version=_text(head.get("version"), "site.version"),
        digest=digest,
        caps=_caps(_table(data.get("dose", {}), "dose"), kb),
        **_monitoring(_table(data.get("intensive-monitoring", {}), "intensive-monitoring")),
        hidden=_hidden(_table(data.get("statements", {}), "statements"), kb),
        override_reasons=_reasons(data.get("override-reasons", [])),
        weight_max_age_days=_weight_age(_table(data.get("weight", {}), "weight")),
        **_display(_table(data.get("display", {}), "display")),
    )


# --- dose caps ----------------------------------------------------------------------------------------------


def guideline_limits(kb: KnowledgeBase, statement: str, kind: DoseKind) -> tuple[Fraction, ...]:
    """The guideline's limits per kg of one dose statement and kind, in every setting it applies to."""
    from ._dose_policy import dose_policy  # the policy reads the site: imported here, not at the top

    found: set[Fraction] = set()
    for guideline in ("acute", "chronic"):
        for setting in Setting:
            policy = dose_policy(kb, guideline, setting).of(kind)
            for limit in (policy.limit, policy.icu_limit, policy.also):
                if limit is not None and limit.statement == statement:
                    found.add(limit.per_kg)
    return tuple(sorted(found))


def _caps(dose: Mapping[str, Any], kb: KnowledgeBase) -> dict[tuple[str, DoseKind], DoseCap]:
    caps: dict[tuple[str, DoseKind], DoseCap] = {}
    for statement, entry in dose.items():
        prefix = f"dose.{statement}"
        st = kb.statements.get(statement)
        if st is None or st.role != "dose-limit":
            dose_ids = ", ".join(s.id for s in kb.statements.values() if s.role == "dose-limit")
            raise SiteError(prefix, f"not a dose statement (one of: {dose_ids})")
        table = _table(entry, prefix)
        _only(table, {*_CAP_KEYS, "allow_above_guideline"}, prefix + ".")
        allow = _flag(table.get("allow_above_guideline", False), f"{prefix}.allow_above_guideline")
        by_kind: dict[DoseKind, dict[str, Fraction]] = {}
        for key, value in table.items():
            if key == "allow_above_guideline":
                continue
            kind, per_kg = _CAP_KEYS[key]
            if not guideline_limits(kb, statement, kind):
                raise SiteError(f"{prefix}.{key}", f"{statement} has no {kind.value} limit to tighten")
            cap = _positive(value, f"{prefix}.{key}")
            if per_kg:
                _not_looser(cap, guideline_limits(kb, statement, kind), allow, f"{prefix}.{key}")
            by_kind.setdefault(kind, {})["per_kg" if per_kg else "amount"] = cap
        if allow and not any("per_kg" in v for v in by_kind.values()):
            raise SiteError(
                f"{prefix}.allow_above_guideline",
                "allows nothing: no per-kg cap above the guideline is given",
            )
        for kind, values in by_kind.items():
            caps[(statement, kind)] = DoseCap(
                statement, kind, values.get("per_kg"), values.get("amount"), allow
            )
    return caps


def _not_looser(cap: Fraction, limits: tuple[Fraction, ...], allow: bool, key: str) -> None:
    """A per-kg cap above the guideline's (smallest) limit is looser: refused unless explicitly allowed."""
    if cap > min(limits) and not allow:
        shown = " and ".join(_decimal_text(x) for x in limits)
        raise SiteError(
            key,
            f"{_decimal_text(cap)} is above the guideline's limit ({shown}); a site may only tighten it "
            "unless the entry says allow_above_guideline = true",
        )


# --- other sections -----------------------------------------------------------------------------------------


def _monitoring(table: Mapping[str, Any]) -> dict[str, Any]:
    _only(table, {"locations", "location_names"}, "intensive-monitoring.")
    codes = set()
    for i, item in enumerate(_list(table.get("locations", []), "intensive-monitoring.locations")):
        key = f"intensive-monitoring.locations[{i}]"
        entry = _table(item, key)
        _only(entry, {"system", "code"}, key + ".")
        codes.add((_text(entry.get("system"), key + ".system"), _text(entry.get("code"), key + ".code")))
    names = {
        _name_key(_text(n, f"intensive-monitoring.location_names[{i}]"))
        for i, n in enumerate(_list(table.get("location_names", []), "intensive-monitoring.location_names"))
    }
    return {"monitoring_codes": frozenset(codes), "monitoring_names": frozenset(names)}


def _hidden(table: Mapping[str, Any], kb: KnowledgeBase) -> frozenset[str]:
    hidden = set()
    for statement, entry in table.items():
        key = f"statements.{statement}"
        st = kb.statements.get(statement)
        if st is None:
            raise SiteError(key, "no statement has this id (see ketamine-cds statements)")
        options = _table(entry, key)
        _only(options, {"hide"}, key + ".")
        if _flag(options.get("hide", False), key + ".hide"):
            if st.role != "context":
                raise SiteError(
                    key + ".hide",
                    f"{statement} can change the verdict or warns of a risk ({st.role}); only information "
                    "statements (acute-opioid-adjunct, chronic-dose-minimum, pretest-*, ...) may be hidden",
                )
            hidden.add(statement)
    return frozenset(hidden)


def _reasons(value: Any) -> tuple[OverrideReason, ...]:
    reasons = []
    for i, item in enumerate(_list(value, "override-reasons")):
        key = f"override-reasons[{i}]"
        entry = _table(item, key)
        _only(entry, {"code", "display"}, key + ".")
        code = _text(entry.get("code"), key + ".code")
        if not _CODE.match(code):
            raise SiteError(
                key + ".code", "lower-case letters, digits and hyphens only (e.g. pain-service-approved)"
            )
        reasons.append(OverrideReason(code, _text(entry.get("display"), key + ".display")))
    codes = [r.code for r in reasons]
    if len(set(codes)) != len(codes):
        raise SiteError("override-reasons", "a code is given twice")
    return tuple(reasons)


def _weight_age(table: Mapping[str, Any]) -> int | None:
    _only(table, {"max_age_days"}, "weight.")
    value = table.get("max_age_days")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 3650:
        raise SiteError("weight.max_age_days", "a whole number of days from 1 to 3650")
    return value


def _display(table: Mapping[str, Any]) -> dict[str, Any]:
    _only(table, {"bolus_step_mg", "concentrations_mg_per_ml"}, "display.")
    step = table.get("bolus_step_mg")
    concentrations = _list(table.get("concentrations_mg_per_ml", []), "display.concentrations_mg_per_ml")
    return {
        "bolus_step_mg": _positive(step, "display.bolus_step_mg") if step is not None else None,
        "concentrations_mg_per_ml": tuple(
            _positive(c, f"display.concentrations_mg_per_ml[{i}]") for i, c in enumerate(concentrations)
        ),
    }


# --- checked values -----------------------------------------------------------------------------------------


def _only(table: Mapping[str, Any], allowed: set[str] | frozenset[str], prefix: str) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise SiteError(prefix + unknown[0], f"unknown key (allowed here: {', '.join(sorted(allowed))})")


def _table(value: Any, key: str) -> Mapping[str, Any]:
    if value is None:
        raise SiteError(key, "is required")
    if not isinstance(value, Mapping):
        raise SiteError(key, "must be a table")
    return value


def _list(value: Any, key: str) -> list[Any]:
    if not isinstance(value, list):
        raise SiteError(key, "must be a list")
    return value


def _text(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SiteError(key, "is required (a non-empty string)")
    return value.strip()


def _flag(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise SiteError(key, "must be true or false")
    return value


def _positive(value: Any, key: str) -> Fraction:
    """A number above zero, written as a string ("0.3") or a TOML number; read exactly."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise SiteError(key, f'must be a number such as "0.3", not {value!r}')
    number = plain_decimal(str(value), exponent=True)  # "0_3" is not 3
    if number is None:
        raise SiteError(key, f'must be a plain number such as "0.3", not {value!r}')
    if not number.is_finite() or number <= 0:
        raise SiteError(key, f"must be above zero, not {value!r}")
    return Fraction(number)


def _decimal_text(value: Fraction) -> str:
    return f"{Decimal(value.numerator) / Decimal(value.denominator):f}".rstrip("0").rstrip(".")
