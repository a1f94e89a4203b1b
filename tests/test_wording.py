"""Every message template of every statement, and the readable report, rendered with the values that have
gone wrong before: codes without their names, conditions stated in a case rather than coded, a procedure given
only by its class, doses in every unit with and without a weight or a concentration, four-digit doses.

Each check below is one kind of defect a user found in the wording (issue 17), tested over all templates so
that a new template cannot bring it back:

- a value said twice ("abdominal surgery (abdominal surgery)", "30 mg (30 mg, ...)", "The planned procedure,
  abdominal surgery, is in the class "abdominal surgery"");
- a missing datum said twice ("... severity or control not recorded but not how severe it is");
- a code passed off as a name ("Relative contraindication: F20.9");
- a condition named by an adjective ("The record shows pregnant");
- a sentence after a full stop starting in lower case;
- "not stated" twice in one finding;
- a number of 1,000 or more without its thousands separator ("4000 mg/h");
- parentheses inside parentheses, or two in a row, which a reader has to untangle.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from builders import facts, iv
from ketamine_cds import Coded, Finding, PlannedProcedure, assess
from ketamine_cds._assessment import ProcedureRef
from ketamine_cds._render import finding_texts, grade_line, text_report
from message_grid import CONDITIONS, KB, SNOMED, assessments


def _procedures() -> list[ProcedureRef]:
    """The planned procedure as the engine names it: named and coded, coded without its name, and given only
    by its class (the web form's class without a name), for every class."""
    found: list[ProcedureRef] = []
    sources = [Coded("Appendectomy", SNOMED, "80146002"), Coded("80146002", SNOMED, "80146002")]
    for pclass in KB.procedure_classes.values():
        for source in [*sources, Coded(pclass.label)]:
            a = assess(facts(procedure=PlannedProcedure(source, pclass.id)))
            found += [p for f in a.findings if isinstance(p := f.params.get("procedure"), ProcedureRef)]
    return found


ASSESSMENTS = list(assessments())


def _given() -> dict[tuple[str, str], list[dict[str, object]]]:
    """The values the engine gave each message over the grid, each set once."""
    given: dict[tuple[str, str], list[dict[str, object]]] = {}
    for a in ASSESSMENTS:
        for f in a.findings:
            seen = given.setdefault((f.statement.id, f.message_key), [])
            if dict(f.params) not in seen:
                seen.append(dict(f.params))
    return given


GIVEN = _given()
PROCEDURES = list(dict.fromkeys(_procedures()))
MESSAGES = [(s.id, k) for s in KB.statements.values() for k in s.messages]


def test_the_grid_reaches_every_message_of_every_statement() -> None:
    assert set(MESSAGES) - set(GIVEN) == set()


def renderings(statement_id: str, key: str) -> Iterator[tuple[Finding, str, str]]:
    """The message filled in with every set of values the engine gave it, and with every awkward condition
    and procedure in place of the ones it gave."""
    st = KB.statements[statement_id]
    for params in GIVEN[(statement_id, key)]:
        variants = [params]
        if "condition" in params:
            variants += [{**params, "condition": c} for c in CONDITIONS.values()]
        if isinstance(params.get("procedure"), ProcedureRef):
            variants += [{**params, "procedure": p} for p in PROCEDURES]
        for values in variants:
            finding = Finding(st, key, values)
            summary, detail = finding_texts(finding)
            yield finding, summary, detail


# --- the kinds of defect ------------------------------------------------------------------------------------


def sentences(text: str) -> list[str]:
    plain = re.sub(r"\*\*", "", text)
    return [s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", plain) if s]


def _conditions(finding: Finding) -> list[Coded]:
    value = finding.params.get("condition")
    return [c for c in value if isinstance(c, Coded)] if isinstance(value, tuple) else []


def value_texts(finding: Finding) -> list[str]:
    """The words a condition or a procedure is written with, each of which a sentence should say once."""
    texts: list[str] = []
    for coded in _conditions(finding):
        if coded.display.strip():
            texts.append(coded.display)
    procedure = finding.params.get("procedure")
    if isinstance(procedure, ProcedureRef):
        texts.append(procedure.source.display if procedure.named else procedure.unnamed)
    return [t for t in texts if len(t) > 3]


def defects(finding: Finding, summary: str, detail: str) -> list[str]:
    found: list[str] = []
    both = f"{summary}\n{detail}"
    if "{" in both or "}" in both:
        found.append("a placeholder is not filled in")
    if re.search(r"\b([A-Za-z][\w ,/-]{2,}?) \(\1[,)]", both) or re.search(
        r"(\d[\d,.]* [\w/]+) \(\1[,)]", both
    ):
        found.append("a value is repeated in the parentheses after it")
    for sentence in sentences(summary) + sentences(detail):
        for value in value_texts(finding):
            if sentence.lower().count(value.lower()) > 1:
                found.append(f"{value!r} twice in one sentence: {sentence!r}")
        if re.search(r"not recorded", sentence) and re.search(r"not how severe|not say how severe", sentence):
            found.append(f"a missing datum said twice: {sentence!r}")
    for coded in _conditions(finding):
        if coded.code and coded.display in ("", coded.code):
            for m in re.finditer(re.escape(coded.code), both):
                if not re.search(r"(SNOMED CT|ICD-10-CM|RxNorm|LOINC) $", both[: m.start()]):
                    found.append(f"the code {coded.code} is shown as if it were a name")
    if re.search(r"\bshows pregnant\b", both):
        found.append("a condition named by an adjective")
    if re.search(r"(?<!e\.g)(?<!i\.e)\. +[a-z]", re.sub(r"\*\*", "", both)):
        found.append("a sentence starts in lower case")
    grade = grade_line(finding.statement, detail) or ""
    if len(re.findall(r"(?:grade|certainty)[\w ]*not stated", f"{both}\n{grade}")) > 1:
        found.append("'not stated' more than once")
    if re.search(r"(?<![\w.,])\d{4,}(?:\.\d+)? ?(?:mg|mL|mcg|g|kg|MME)\b", both):
        found.append("a number of 1,000 or more without its thousands separator")
    if re.search(r"\([^()]*\([^()]*\)[^()]*\)", both):
        found.append("parentheses inside parentheses")
    if re.search(r"\) \(", both):
        found.append("two parentheses in a row")
    if re.search(r" [,.;:]|[,;:] ?[,;:.]|\.\.| {2}", both):
        found.append("stray punctuation or spacing")
    return found


@pytest.mark.parametrize(("statement_id", "key"), MESSAGES)
def test_every_message_reads_cleanly_with_every_kind_of_value(statement_id: str, key: str) -> None:
    problems = {
        problem: f"{summary} | {detail}"
        for finding, summary, detail in renderings(statement_id, key)
        for problem in defects(finding, summary, detail)
    }
    assert problems == {}


def test_the_readable_reports_read_cleanly() -> None:
    for a in ASSESSMENTS[::7]:
        report = text_report(a)
        assert report.count("not the same as ruled out") + report.count('"not found" is not "ruled out"') <= 1
        assert not re.search(r"(?<!e\.g)(?<!i\.e)\. +[a-z]", report), report
        assert not re.search(r"(\d[\d,.]* [\w/]+) \(\1[,)]", report), report
        assert not re.search(r"(?<![\w.,:-])\d{4,}(?:\.\d+)? ?(?:mg|mL|mcg|kg)\b", report), report


def test_a_supportive_finding_beside_a_contraindication_says_it_is_outweighed() -> None:
    contraindicated = [a for a in ASSESSMENTS if a.verdict.value == "contraindicated"]
    assert contraindicated
    for a in contraindicated:
        for f in a.findings:
            if f.statement.role in ("support-strong", "support-weak") and f.message_key == "applies":
                summary, detail = finding_texts(f)
                assert summary.startswith("Outweighed by a contraindication here."), summary
                assert "which decides the verdict" in detail
    consider = next(a for a in ASSESSMENTS if a.verdict.value == "consider")
    assert not any(finding_texts(f)[0].startswith("Outweighed") for f in consider.findings)


def test_a_code_without_its_name_names_its_system() -> None:
    st = KB.statements["contra-psychosis"]
    finding = Finding(st, "present", {"condition": CONDITIONS["code without its name"]})
    summary, detail = finding_texts(finding)
    assert summary == "Relative contraindication: ICD-10-CM F20.9 (name not given)"
    assert "The record shows **ICD-10-CM F20.9 (its name is not given)**." in detail


def test_a_procedure_given_only_by_its_class_is_not_named_by_it() -> None:
    a = assess(facts(procedure=PlannedProcedure(Coded("abdominal surgery"), "abdominal")))
    (finding,) = [f for f in a.findings if f.statement.id == "acute-painful-surgery"]
    summary, detail = finding_texts(finding)
    assert summary == "Consider IV ketamine: abdominal surgery is expected to cause severe postoperative pain"
    assert detail.startswith(
        'The planned procedure (only its class is given, not its name) is in the class "abdominal surgery",'
    )


def test_a_four_digit_dose_has_its_thousands_separator() -> None:
    a = assess(facts(order=iv(4000, "mg/h")))
    assert a.dose_check is not None and "4,000 mg/h" in text_report(a)
    assert "4000" not in text_report(a).replace("sha256:", "")


def test_the_values_are_the_engines_own() -> None:
    # what the engine really gives: doses with and without a weight, procedures named and not
    doses = [p["dose"] for given in GIVEN.values() for p in given if "dose" in p]
    assert {getattr(d, "weight", 1) is None for d in doses} == {True, False}
    assert {p.named for p in PROCEDURES} == {True, False}
