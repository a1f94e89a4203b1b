"""The ``ketamine-cds`` command. Exit 0 when an assessment was made, 2 when the input cannot be assessed."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
import tempfile
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from ._errors import InputError

if TYPE_CHECKING:
    from ._site import Site

DESCRIPTION = (
    "Clinical decision support for ketamine in acute and chronic pain (2018 ASRA/AAPM/ASA consensus "
    "guidelines). Exit status 0 when an assessment was made, whatever its verdict; 2 with one line on "
    "standard error when the input cannot be assessed."
)
EXIT_INPUT = 2
EXIT_INTERNAL = 70


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.run(args)
        return result
    except InputError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(_os_error(args, exc))
    except UnicodeDecodeError as exc:
        _fail(f"cannot read input: {exc}")
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        print(
            f"ketamine-cds: internal error ({type(exc).__name__}: {exc}); please report it", file=sys.stderr
        )
        return EXIT_INTERNAL


def _os_error(args: argparse.Namespace, exc: OSError) -> str:
    """A file that could not be read or written, named by the argument it belongs to: an error under
    ``--out`` is about the output, not the input."""
    out = getattr(args, "out", None)
    name = exc.filename if isinstance(exc.filename, str) else None
    if out and name and Path(name).absolute().is_relative_to(Path(out).absolute()):
        return f"--out: cannot write {name}: {exc.strerror or exc}"
    return f"cannot read input: {exc}"


def _output_folder(text: str) -> Path:
    """``--out``, made if need be and checked writable before any work: its errors name ``--out``."""
    path = Path(text)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except FileExistsError:
        raise InputError("--out", f"{path} is a file, not a folder") from None
    except OSError as exc:
        raise InputError("--out", f"cannot write to {path}: {exc.strerror or exc}") from None
    return path


def _fail(message: str) -> NoReturn:
    print(f"ketamine-cds: {message}", file=sys.stderr)
    raise SystemExit(EXIT_INPUT)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    from ._kb import load_knowledge

    try:
        mine = version("ketamine-cds")
    except PackageNotFoundError:  # run from a source tree that was never installed
        mine = "unknown"
    return f"ketamine-cds {mine} (knowledge base {load_knowledge().version})"


class _VersionAction(argparse.Action):
    """``--version``: the program's and the knowledge base's versions (the knowledge base read only then)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print(_version())
        parser.exit()


Commands = argparse._SubParsersAction  # the subcommands of ketamine-cds, each added by a function of its own


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ketamine-cds", description=DESCRIPTION)
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", required=True)
    _assess_command(sub)
    _serve_command(sub)
    _report_command(sub)
    _audit_command(sub)
    _synth_command(sub)
    _statements_command(sub)
    _limits_command(sub)
    _test_token_command(sub)
    return parser


def _assess_command(sub: Commands[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("assess", help="assess one FHIR R4 Bundle or case document")
    p.add_argument("path", help="a JSON file, or - for standard input")
    p.add_argument("--json", action="store_true", help="print the assessment as one JSON object")
    p.add_argument("--as-of", type=_date, help="assess as of this date (default: today)")
    p.add_argument("--validate", action="store_true", help="also validate a Bundle strictly against FHIR R4")
    _site_option(p)
    p.set_defaults(run=_assess)


def _serve_command(sub: Commands[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="start the HTTP service (CDS Hooks and the clinician page)")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=_whole, help="port (default 8000)")
    p.add_argument("--data-dir", help="where the SQLite database lives (default ./data)")
    p.add_argument("--database-url", help="postgresql://... to use PostgreSQL instead of SQLite")
    p.add_argument("--trust-list", help="JSON file of trusted EHR issuers and their JWKS")
    _site_option(p)
    p.add_argument("--public-url", help="the service's own base URL (the JWT audience)")
    p.add_argument(
        "--fhir-server",
        action="append",
        default=[],
        metavar="URL-PREFIX",
        help="a FHIR server the service may read (repeatable); listed servers may be read without an "
        "access token, and once one is listed no other server is contacted",
    )
    p.add_argument(
        "--docs",
        action="store_true",
        default=None,
        help="serve the API's Swagger UI at /docs (loads its script from a CDN; off by default)",
    )
    p.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        default=None,
        help="development only: accept calls without a JWT",
    )
    p.set_defaults(run=_serve)


def _report_command(sub: Commands[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("report", help="verdict counts and card override rates from the service's audit trail")
    p.add_argument("--since", type=_date, help="first day (YYYY-MM-DD)")
    p.add_argument("--until", type=_date, help="last day (YYYY-MM-DD)")
    p.add_argument("--data-dir", help="the service's data directory (default ./data)")
    p.add_argument("--database-url", help="postgresql://... when the service uses PostgreSQL")
    output = p.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="one JSON object")
    output.add_argument("--csv", action="store_true", help="one CSV row per statement and one for all")
    p.set_defaults(run=_report)


def _audit_command(sub: Commands[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("audit", help="audit recorded administrations against the guideline")
    p.add_argument("input", help="flat table (CSV/Parquet), FHIR Bulk NDJSON folder, or OMOP CDM folder")
    p.add_argument("--out", required=True, help="folder for findings.parquet, summary.json and report.html")
    p.add_argument("--engine", choices=["duckdb", "spark"], default="duckdb")
    p.add_argument("--form", choices=["flat", "fhir", "omop"], help="input form (default: detected)")
    p.add_argument("--memory-limit", default="1GB", help="DuckDB memory limit (default 1GB)")
    p.add_argument("--threads", type=_whole, help="DuckDB threads (default: all cores)")
    p.add_argument(
        "--column",
        action="append",
        default=[],
        metavar="NAME=COLUMN",
        help="read the flat table's column NAME as COLUMN (repeatable); NAME=- leaves it out",
    )
    _site_option(p)
    p.set_defaults(run=_audit)


def _synth_command(sub: Commands[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("synth", help="write a synthetic data set in all three input forms")
    p.add_argument("--rows", type=_whole, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=_whole, default=20261124)
    p.set_defaults(run=_synth)


def _statements_command(sub: Commands[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("statements", help="list the knowledge base's statements")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_statements)


def _limits_command(sub: Commands[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("limits", help="print the dose limits for a body weight")
    p.add_argument("--weight", required=True, help="e.g. 80kg, 80 kg, 176lb, 80000g")
    p.add_argument(
        "--setting", choices=["intensive-care", "non-intensive-care", "unknown"], default="unknown"
    )
    p.add_argument(
        "--use",
        default="perioperative",
        help="intended use (default perioperative): acute uses get the acute pain limits, chronic uses "
        "(crps, fibromyalgia, ...) the chronic pain range",
    )
    p.add_argument("--json", action="store_true")
    _site_option(p)
    p.set_defaults(run=_limits)


def _test_token_command(sub: Commands[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "test-token",
        help="sign a test JWT with a local key, for trying the service (never next to real patients)",
        description="Signs a CDS Hooks JWT (ES384) with a test key kept in --keys, made there on first use "
        "with a trust list that trusts it (trust-list.json, for serve --trust-list). Prints the token. "
        "For trying the service and for tests: the key is on disk unprotected; never trust it next to real "
        "patients.",
    )
    p.add_argument("--keys", required=True, help="folder for the test key and its trust list")
    p.add_argument(
        "--aud",
        required=True,
        help="the endpoint the token is for, e.g. http://127.0.0.1:8000/cds-services/ketamine-order-sign",
    )
    p.add_argument("--iss", default="https://ehr.example.org/test-client", help="the issuer the token names")
    p.add_argument("--minutes", type=_whole, default=5, help="how long the token is valid (default 5)")
    p.set_defaults(run=_test_token)


def _site_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--site",
        help="a site protocol (TOML, README 'Site protocols'); default: the file named by KETAMINE_CDS_SITE",
    )


def load_site_option(args: argparse.Namespace) -> Site | None:
    """The site file of ``--site``, else of KETAMINE_CDS_SITE, checked; None without either."""
    import os

    from ._kb import load_knowledge
    from ._site import load_site

    path = args.site or os.environ.get("KETAMINE_CDS_SITE") or None
    return load_site(path, load_knowledge()) if path else None


def _whole(text: str) -> int:
    """A whole number written in ASCII digits: int() would read "1_0" as 10 and "１０" as 10 too."""
    from ._units import plain_whole

    number = plain_whole(text)
    if number is None:
        raise argparse.ArgumentTypeError(f"expected a whole number such as 10, not {text!r}")
    return number


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _read(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    with open(path, "rb") as handle:
        return handle.read()


def _assess(args: argparse.Namespace) -> int:
    from ._engine import assess
    from ._inputs import facts_from_document, parse_json
    from ._render import assessment_json, text_report

    site = load_site_option(args)
    facts = facts_from_document(
        parse_json(_read(args.path)), today=args.as_of or dt.date.today(), validate=args.validate, site=site
    )
    assessment = assess(facts, site=site)
    if args.json:
        print(json.dumps(assessment_json(assessment), ensure_ascii=False))
    else:
        sys.stdout.write(text_report(assessment))
    return 0


def _serve(args: argparse.Namespace) -> int:
    import logging
    from pathlib import Path

    import uvicorn

    from .service.app import create_app
    from .service.settings import Settings

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env(
        host=args.host,
        port=args.port,
        data_dir=Path(args.data_dir) if args.data_dir else None,
        database_url=args.database_url,
        trust_list=Path(args.trust_list) if args.trust_list else None,
        public_url=args.public_url,
        allow_unauthenticated=args.allow_unauthenticated,
        docs=args.docs,
        fhir_servers=tuple(args.fhir_server),
        site=Path(args.site) if args.site else None,
    )
    from .service.auth import TrustListError
    from .service.fhir_client import FhirServerListError
    from .service.store import StoreUnavailable

    try:
        app = create_app(settings)
    except TrustListError as exc:
        raise InputError("--trust-list", str(exc)) from None
    except FhirServerListError as exc:
        raise InputError("--fhir-server", str(exc)) from None
    except StoreUnavailable as exc:
        raise InputError("--database-url" if settings.database_url else "--data-dir", str(exc)) from None
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info")
    return 0


def _report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .service.override_report import build_report, report_csv, report_text
    from .service.settings import Settings
    from .service.store import open_store

    settings = Settings.from_env(
        data_dir=Path(args.data_dir) if args.data_dir else None, database_url=args.database_url
    )
    if not settings.database_url and not settings.sqlite_path.exists():
        raise InputError("--data-dir", f"no audit database at {settings.sqlite_path}")
    from .service.store import StoreUnavailable

    try:
        store = open_store(settings)
    except StoreUnavailable as exc:
        raise InputError("--database-url" if settings.database_url else "--data-dir", str(exc)) from None
    try:
        report = build_report(store, args.since, args.until)
    finally:
        store.close()
    if args.json:
        print(json.dumps(report))
    elif args.csv:
        sys.stdout.write(report_csv(report))
        if report["note"]:  # the rows say nothing about an empty period; the sentence goes to the reader
            print(report["note"], file=sys.stderr)
    else:
        sys.stdout.write(report_text(report))
    return 0


def _audit(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .audit.duck import checked_memory_limit
    from .audit.flat import parse_column_mappings
    from .audit.run import run_audit

    checked_memory_limit(args.memory_limit)  # before anything is made: it goes into SQL
    summary = run_audit(
        args.input if args.engine == "spark" else Path(args.input),  # Spark reads any location (hdfs://...)
        _output_folder(args.out),
        engine=args.engine,
        form=args.form,
        memory_limit=args.memory_limit,
        threads=args.threads,
        site=load_site_option(args),
        columns=parse_column_mappings(args.column),
    )
    print(json.dumps({k: summary[k] for k in ("administrations", "bad_rows", "verdicts", "seconds")}))
    return 0


def _synth(args: argparse.Namespace) -> int:

    from .audit.synth import write_all

    if args.rows <= 0:
        raise InputError("--rows", "must be a positive number of rows")
    for form, path in write_all(args.rows, _output_folder(args.out), args.seed).items():
        print(f"{form}: {path}")
    return 0


def _statements(args: argparse.Namespace) -> int:
    from ._kb import load_knowledge

    kb = load_knowledge()
    if args.json:
        rows = [
            {
                "id": s.id,
                "title": s.title,
                "text": s.text,
                "grade": s.grade,
                "certainty": s.certainty,
                "evidence": s.evidence,
                "role": s.role,
                "verification": list(s.tags),
                "verification_note": s.verification_note,
                "overridable": s.overridable,
                "source": {"label": s.source.label, "url": s.source.url},
                "thresholds": dict(s.thresholds),
            }
            for s in kb.statements.values()
        ]
        print(
            json.dumps({"version": kb.version, "digest": kb.digest, "statements": rows}, ensure_ascii=False)
        )
        return 0
    print(f"Knowledge base {kb.version} ({kb.digest}): {kb.guideline}\n")
    for s in kb.statements.values():
        note = f" ({s.verification_note})" if s.verification_note else ""
        print(f"{s.id}  [grade {s.grade_text}; certainty {s.certainty_text}; {' '.join(s.tags)}{note}]")
        print(f"  {s.text}")
        print(f"  Source: {s.source.label}. {s.source.url}\n")
    return 0


_WEIGHT = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z\[\]_]+)\s*$")
_COMMA = re.compile(r"^\s*[0-9]+,[0-9]+")


def _limits(args: argparse.Namespace) -> int:
    from ._engine import assess
    from ._facts import Facts, Setting, checked_weight
    from ._kb import load_knowledge
    from ._render import limits_json
    from ._units import bounded, weight_in_kg

    if _COMMA.match(args.weight):
        point = args.weight.replace(",", ".", 1).strip()
        raise InputError(
            "--weight", f"write the number with a decimal point, not a comma: {point!r}, not {args.weight!r}"
        )
    match = _WEIGHT.match(args.weight)
    if not match:
        raise InputError("--weight", f"expected a number and a unit such as 80kg, not {args.weight!r}")
    try:
        value = bounded(Decimal(match.group(1)), "--weight")
    except InvalidOperation:
        raise InputError("--weight", f"not a number: {match.group(1)!r}") from None
    weight = checked_weight(weight_in_kg(value, match.group(2), "--weight"), "--weight")
    if args.use not in load_knowledge().uses:
        raise InputError("--use", f"unknown use {args.use!r}; see the README's table of uses")
    facts = Facts(as_of=dt.date.today(), weight_kg=weight, setting=Setting(args.setting), use=args.use)
    assessment = assess(facts, site=load_site_option(args))
    limits = limits_json(assessment.dose_limits, args.setting)
    if args.json:
        print(json.dumps(limits))
        return 0
    from ._render import dose_display, limits_lines

    print("\n".join(limits_lines(dose_display(assessment))))
    return 0


def _test_token(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .service.test_token import sign_test_token

    if not 0 < args.minutes <= 24 * 60:
        raise InputError("--minutes", "from 1 to 1440 minutes")
    token, _ = sign_test_token(Path(args.keys), iss=args.iss, aud=args.aud, minutes=args.minutes)
    print(token)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
