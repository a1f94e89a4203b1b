"""Cold start of ``ketamine-cds assess FILE --json`` against a bare interpreter start, in the same run.

Prints figures; never asserts on timing (exit 0 unless a command fails).

    python bench/bench_cold_start.py             # 15 interleaved runs of each command
    python bench/bench_cold_start.py --runs 31

Every command runs with this interpreter (``sys.executable``): a bare ``python -c pass``, the CLI on a small
FHIR R4 Bundle (Patient, weight, one Condition, appendectomy in preparation, a ketamine 20 mg IV bolus order)
and the CLI on the same question as a case document. Target: median(assess) within 10x median(bare).
Then one run with ``-X importtime`` lists the heaviest imports under ``ketamine_cds``, so that a heavy
dependency reaching the CLI path (pydantic, fhir.resources) shows up.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TARGET_RATIO = 10.0
WATCH = ("pydantic", "fhir.resources", "fhir_core", "jsonschema")  # must not be on the CLI path by default

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
PATIENT = "urn:uuid:0b3c6f0e-1c1a-4c39-9d6e-bench0000001"


def _entry(uuid: str, resource: dict[str, Any]) -> dict[str, Any]:
    return {"fullUrl": f"urn:uuid:{uuid}", "resource": resource}


def small_bundle() -> dict[str, Any]:
    subject = {"reference": PATIENT}
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "fullUrl": PATIENT,
                "resource": {
                    "resourceType": "Patient",
                    "id": "bench",
                    "gender": "female",
                    "birthDate": "1971-05-02",
                },
            },
            _entry(
                "0b3c6f0e-1c1a-4c39-9d6e-bench0000002",
                {
                    "resourceType": "Observation",
                    "id": "weight",
                    "status": "final",
                    "category": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                    "code": "vital-signs",
                                }
                            ]
                        }
                    ],
                    "code": {"coding": [{"system": LOINC, "code": "29463-7", "display": "Body weight"}]},
                    "subject": subject,
                    "effectiveDateTime": "2026-11-23T08:00:00Z",
                    "valueQuantity": {"value": 80, "unit": "kg", "system": UCUM, "code": "kg"},
                },
            ),
            _entry(
                "0b3c6f0e-1c1a-4c39-9d6e-bench0000003",
                {
                    "resourceType": "Condition",
                    "id": "osa",
                    "clinicalStatus": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                "code": "active",
                            }
                        ]
                    },
                    "code": {
                        "coding": [
                            {
                                "system": SNOMED,
                                "code": "78275009",
                                "display": "Obstructive sleep apnea syndrome",
                            }
                        ]
                    },
                    "subject": subject,
                },
            ),
            _entry(
                "0b3c6f0e-1c1a-4c39-9d6e-bench0000004",
                {
                    "resourceType": "Procedure",
                    "id": "appendectomy",
                    "status": "preparation",
                    "code": {"coding": [{"system": SNOMED, "code": "80146002", "display": "Appendectomy"}]},
                    "subject": subject,
                },
            ),
            _entry(
                "0b3c6f0e-1c1a-4c39-9d6e-bench0000005",
                {
                    "resourceType": "MedicationRequest",
                    "id": "ketamine",
                    "status": "draft",
                    "intent": "order",
                    "medicationCodeableConcept": {
                        "coding": [{"system": RXNORM, "code": "238082", "display": "ketamine"}],
                        "text": "ketamine",
                    },
                    "subject": subject,
                    "dosageInstruction": [
                        {
                            "route": {
                                "coding": [{"system": SNOMED, "code": "47625008", "display": "Intravenous"}]
                            },
                            "doseAndRate": [
                                {"doseQuantity": {"value": 20, "unit": "mg", "system": UCUM, "code": "mg"}}
                            ],
                        }
                    ],
                },
            ),
        ],
    }


def small_case() -> dict[str, Any]:
    return {
        "indication": "perioperative",
        "setting": "non-intensive-care",
        "patient": {
            "weight": {"value": 80, "unit": "kg"},
            "age_years": 55,
            "sex": "female",
            "conditions": [
                {"system": SNOMED, "code": "78275009", "display": "Obstructive sleep apnea syndrome"}
            ],
            "opioids": [],
        },
        "procedure": {"system": SNOMED, "code": "80146002", "display": "Appendectomy"},
        "order": {"route": "intravenous", "dose": {"value": 20, "unit": "mg"}},
    }


def cli_prefix() -> tuple[list[str], str]:
    """How to start the CLI with this interpreter, and a short label for it."""
    if importlib.util.find_spec("ketamine_cds.__main__") is not None:
        return [sys.executable, "-m", "ketamine_cds"], "python -m ketamine_cds"
    code = "from ketamine_cds._cli import main; raise SystemExit(main())"
    return [sys.executable, "-c", code], "python -c 'from ketamine_cds._cli import main ...'"


@dataclass
class Command:
    name: str
    argv: list[str]
    env: dict[str, str]
    times: list[float] = field(default_factory=list)


def run_once(command: Command, cwd: str) -> tuple[float, subprocess.CompletedProcess[bytes]]:
    start = time.perf_counter()
    done = subprocess.run(command.argv, cwd=cwd, env=command.env, capture_output=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(
            f"{command.name}: exit {done.returncode}: {done.stderr.decode(errors='replace').strip()[-800:]}"
        )
    return elapsed, done


def environments(tmp: str) -> tuple[dict[str, str], dict[str, str]]:
    """(bytecode cached, compiled from source) environments for the child processes.

    Cached is how an installed package runs (pip writes .pyc files): bytecode goes to a private
    ``PYTHONPYCACHEPREFIX`` in the temporary directory, so nothing is written next to the sources.
    From source (``PYTHONDONTWRITEBYTECODE=1``, no prefix) is how a checkout runs when bytecode is never
    written, as in some containers: every ``ketamine_cds`` module is compiled on every start.
    """
    base = {
        k: v
        for k, v in os.environ.items()
        if k
        not in ("PYTHONPROFILEIMPORTTIME", "PYTHONDEVMODE", "PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")
    }
    return {**base, "PYTHONPYCACHEPREFIX": str(Path(tmp) / "pycache")}, {
        **base,
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def p90(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


@dataclass
class Import:
    name: str
    depth: int
    self_us: int
    cumulative_us: int
    under: bool  # imported (directly or not) while a ketamine_cds module was being imported


def parse_importtime(stderr: str) -> list[Import]:
    """``-X importtime`` lines are in post-order (children first); walk them backwards to find ancestors."""
    rows: list[tuple[str, int, int, int]] = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_text, cumulative_text, module = line[len("import time:") :].split("|", 2)
        depth = (len(module) - len(module.lstrip(" ")) - 1) // 2
        rows.append((module.strip(), depth, int(self_text), int(cumulative_text)))
    stack: list[tuple[int, str]] = []
    out: list[Import] = []
    for name, depth, self_us, cumulative_us in reversed(rows):
        while stack and stack[-1][0] >= depth:
            stack.pop()
        under = name.startswith("ketamine_cds") or any(n.startswith("ketamine_cds") for _, n in stack)
        out.append(Import(name, depth, self_us, cumulative_us, under))
        stack.append((depth, name))
    out.reverse()
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=15, help="interleaved runs of each command (default 15)")
    parser.add_argument("--top", type=int, default=8, help="imports to list (default 8)")
    args = parser.parse_args(argv)

    prefix, how = cli_prefix()
    has_fhir = importlib.util.find_spec("ketamine_cds.adapters.fhir") is not None
    with tempfile.TemporaryDirectory(prefix="ketamine-bench-") as tmp:
        bundle_path = Path(tmp) / "small-bundle.json"
        case_path = Path(tmp) / "small-case.json"
        bundle_path.write_text(json.dumps(small_bundle(), indent=2))
        case_path.write_text(json.dumps(small_case(), indent=2))
        cached, source = environments(tmp)
        bare_command = Command("bare: python -c pass", [sys.executable, "-c", "pass"], cached)
        inputs = [("case document", case_path)]
        if has_fhir:
            inputs.insert(0, ("small bundle", bundle_path))
        commands = [bare_command]
        for name, path in inputs:
            argv = [*prefix, "assess", str(path), "--json"]
            commands.append(Command(f"assess {name}", argv, cached))
            commands.append(Command(f"assess {name}, no .pyc", argv, source))
        print(f"bench_cold_start: Python {platform.python_version()} ({sys.executable}); CLI as `{how}`")
        names = ", ".join(p.name for _, p in inputs)
        print(f"  inputs: {names} (each with --json); {args.runs} interleaved runs of each command")
        if not has_fhir:
            print("  assess small bundle: SKIPPED (ketamine_cds.adapters.fhir does not exist yet)")
        for command in commands:  # warm-up (bytecode cache, page cache) and a check of the output
            _, done = run_once(command, tmp)
            if command is not bare_command and ", no .pyc" not in command.name:
                result = json.loads(done.stdout)
                check = result.get("dose_check") or {}
                print(
                    f"  {command.name}: verdict {result['verdict']}, dose check {check.get('status')}, "
                    f"{len(result['findings'])} findings"
                )
        for i in range(args.runs):
            turn = i % len(commands)
            for command in commands[turn:] + commands[:turn]:  # rotate which command goes first
                elapsed, _ = run_once(command, tmp)
                command.times.append(elapsed)

        bare = statistics.median(bare_command.times)
        print()
        header = f"{'runs':>4} {'median ms':>10} {'p90 ms':>8} {'min ms':>7} {'x bare':>7}  target"
        print(f"  {'command':30} {header}")
        for command in commands:
            median = statistics.median(command.times)
            ratio = median / bare
            target = ""
            if command is not bare_command:
                target = f"<= {TARGET_RATIO:g}x: {'met' if ratio <= TARGET_RATIO else 'NOT met'}"
            print(
                f"  {command.name:30} {len(command.times):>4} {median * 1e3:>10.1f} "
                f"{p90(command.times) * 1e3:>8.1f} {min(command.times) * 1e3:>7.1f} {ratio:>7.2f}  {target}"
            )

        profiled = bundle_path if has_fhir else case_path
        timed = subprocess.run(
            [sys.executable, "-X", "importtime", *prefix[1:], "assess", str(profiled), "--json"],
            cwd=tmp,
            env=cached,
            capture_output=True,
            check=False,
        )
        if timed.returncode != 0:
            raise RuntimeError(f"-X importtime run: exit {timed.returncode}: {timed.stderr.decode()[-800:]}")
    imports = parse_importtime(timed.stderr.decode(errors="replace"))
    under = [i for i in imports if i.under]
    total_us = sum(i.self_us for i in imports)
    under_us = sum(i.self_us for i in under)
    print()
    print(
        f"  imports (-X importtime, {profiled.name}): {len(imports)} modules, {total_us / 1e3:.1f} ms in all "
        f"(self times summed); {len(under)} under ketamine_cds, {under_us / 1e3:.1f} ms"
    )
    print(f"  top {args.top} by cumulative time under ketamine_cds:")
    print(f"    {'cumulative ms':>13} {'self ms':>8}  module")
    for row in sorted(under, key=lambda i: i.cumulative_us, reverse=True)[: args.top]:
        print(f"    {row.cumulative_us / 1e3:>13.1f} {row.self_us / 1e3:>8.1f}  {'  ' * row.depth}{row.name}")
    loaded = [w for w in WATCH if any(i.name == w or i.name.startswith(w + ".") for i in imports)]
    print(f"  watch list ({', '.join(WATCH)}): {'LOADED: ' + ', '.join(loaded) if loaded else 'none loaded'}")

    figures = []
    worst = 0.0
    for command in commands[1:]:
        median = statistics.median(command.times)
        if ", no .pyc" in command.name:
            figures.append(f"{median * 1e3:.0f} ms ({median / bare:.1f}x) without .pyc")
            continue
        worst = max(worst, median / bare)
        label = "bundle" if "bundle" in command.name else "case"
        figures.append(f"{label} {median * 1e3:.0f} ms ({median / bare:.1f}x bare)")
    if not has_fhir:
        figures.append("bundle skipped (no FHIR adapter yet)")
    print()
    print(
        f"SUMMARY: cold start {', '.join(figures)}; bare {bare * 1e3:.0f} ms; "
        f"target <= {TARGET_RATIO:g}x (with .pyc) {'met' if worst <= TARGET_RATIO else 'NOT met'}; "
        f"heavy imports: {', '.join(loaded) if loaded else 'none'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
