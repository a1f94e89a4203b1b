"""Issue 20's command-line hardening, run as a real process: one line naming the argument, exit 2."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from test_cli import cli


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_serve_and_report_name_a_database_url_they_cannot_reach(tmp_path: Path) -> None:
    url = f"postgresql://postgres@127.0.0.1:{_closed_port()}/audit"
    for args in (
        ("serve", "--data-dir", str(tmp_path), "--allow-unauthenticated", "--database-url", url),
        ("report", "--database-url", url),
    ):
        done = cli(*args)
        assert done.returncode == 2, done.stderr
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith("ketamine-cds: --database-url: cannot connect to the database"), line


# --- the audit's arguments ---------------------------------------------------------------------------

ROWS = 12  # of the synthetic set's flat table used as input


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic data set in the three forms (``synth``), and a flat CSV of its first ROWS rows."""
    root = tmp_path_factory.mktemp("synthetic")
    done = cli("synth", "--rows", "40", "--out", str(root))
    assert done.returncode == 0, done.stderr
    lines = (root / "flat" / "administrations.csv").read_text().splitlines(keepends=True)
    (root / "small.csv").write_text("".join(lines[: ROWS + 1]))
    return root


def _audit(*args: str) -> subprocess.CompletedProcess[str]:
    return cli("audit", *args)


def _summary(out: Path) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return summary


def _one_line(done: subprocess.CompletedProcess[str], argument: str) -> str:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"ketamine-cds: {argument}: "), line
    return line


# item 13: --memory-limit is a size, never SQL


@pytest.mark.parametrize(
    "limit",
    [
        "1GB'; COPY (SELECT 42 AS x) TO '{injected}'; SET memory_limit = '1GB",
        "1GB' --",
        "lots",
        "1 GB GB",
        "-1GB",
        "0.5.1GB",
        "",
        "1e3GB",
        "1GBs",
    ],
)
def test_a_memory_limit_that_is_not_a_size_exits_2_naming_it(
    synthetic: Path, tmp_path: Path, limit: str
) -> None:
    injected = tmp_path / "injected.csv"
    out = tmp_path / "out"
    done = _audit(
        str(synthetic / "small.csv"), "--out", str(out), f"--memory-limit={limit.format(injected=injected)}"
    )
    line = _one_line(done, "--memory-limit")
    assert "512MB" in line  # says what a size looks like
    assert not injected.exists()
    assert not (out / "findings.parquet").exists()


@pytest.mark.parametrize("limit", ["512MB", "2GiB", "1.5 GB", "900mb", "1073741824B"])
def test_a_memory_limit_written_as_a_size_is_used(synthetic: Path, tmp_path: Path, limit: str) -> None:
    done = _audit(str(synthetic / "small.csv"), "--out", str(tmp_path / "out"), "--memory-limit", limit)
    assert done.returncode == 0, done.stderr
    assert _summary(tmp_path / "out")["administrations"] == ROWS


# item 14: the input path is read as it is written, never as a pattern


def test_a_flat_file_whose_name_holds_pattern_characters_is_read_literally(
    synthetic: Path, tmp_path: Path
) -> None:
    whole = (synthetic / "flat" / "administrations.csv").read_text()
    small = (synthetic / "small.csv").read_text()
    for name, decoy in (
        ("data[1].csv", "data1.csv"),
        ("data*.csv", "data-all.csv"),
        ("data?.csv", "dataX.csv"),
    ):
        folder = tmp_path / name.replace("*", "star").replace("?", "q").replace("[", "(").replace("]", ")")
        folder.mkdir()
        (folder / name).write_text(small)
        (folder / decoy).write_text(whole)  # what the name would match as a pattern
        out = folder / "out"
        done = _audit(str(folder / name), "--out", str(out))
        assert done.returncode == 0, done.stderr
        assert _summary(out)["administrations"] == ROWS, name
        assert _summary(out)["input"] == str(folder / name)


def test_folders_whose_names_hold_pattern_characters_are_read_literally(
    synthetic: Path, tmp_path: Path
) -> None:
    for form in ("flat", "fhir", "omop"):
        literal = tmp_path / f"{form}[1]"
        shutil.copytree(synthetic / form, literal)
        decoy = tmp_path / f"{form}1"
        decoy.mkdir()  # what "{form}[1]" matches as a pattern: an empty folder of the same form
        if form == "flat":
            (decoy / "administrations.csv").write_text(
                (synthetic / "small.csv").read_text().splitlines()[0] + "\n"
            )
        out = tmp_path / f"out-{form}"
        done = _audit(str(literal), "--out", str(out))
        assert done.returncode == 0, (form, done.stderr)
        assert _summary(out)["administrations"] > ROWS, form


def test_an_out_folder_whose_name_holds_pattern_characters_is_read_back_literally(
    synthetic: Path, tmp_path: Path
) -> None:
    decoy = tmp_path / "out1"
    assert _audit(str(synthetic / "flat" / "administrations.csv"), "--out", str(decoy)).returncode == 0
    out = tmp_path / "out[1]"  # as a pattern it names out1, whose findings hold every row
    done = _audit(str(synthetic / "small.csv"), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert _summary(out)["administrations"] == ROWS


# item 15: the audit removes nothing it did not make


def test_a_findings_folder_the_audit_did_not_make_is_left_alone_and_named(
    synthetic: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    (out / "findings.parquet").mkdir(parents=True)
    (out / "findings.parquet" / "my-notes.txt").write_text("mine")
    line = _one_line(_audit(str(synthetic / "small.csv"), "--out", str(out)), "--out")
    assert "findings.parquet" in line and "my-notes.txt" in line
    assert (out / "findings.parquet" / "my-notes.txt").read_text() == "mine"


def test_a_findings_folder_a_spark_run_wrote_is_replaced(synthetic: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    spark = out / "findings.parquet"
    spark.mkdir(parents=True)
    for name in ("part-00000-5b1c.c000.zstd.parquet", "_SUCCESS", ".part-00000-5b1c.c000.zstd.parquet.crc"):
        (spark / name).write_bytes(b"")
    done = _audit(str(synthetic / "small.csv"), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert (out / "findings.parquet").is_file()


def test_files_of_ones_own_in_the_departures_folder_are_kept(synthetic: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _audit(str(synthetic / "flat" / "administrations.csv"), "--out", str(out)).returncode == 0
    exports = sorted(p.name for p in (out / "departures").glob("*.csv"))
    assert exports
    (out / "departures" / "my-summary.csv").write_text("mine")
    assert _audit(str(synthetic / "flat" / "administrations.csv"), "--out", str(out)).returncode == 0
    assert (out / "departures" / "my-summary.csv").read_text() == "mine"
    assert sorted(p.name for p in (out / "departures").glob("*.csv")) == sorted([*exports, "my-summary.csv"])


# item 19: an --out that cannot be written says --out


def test_an_out_that_cannot_be_written_is_named(synthetic: Path, tmp_path: Path) -> None:
    a_file = tmp_path / "a-file.txt"
    a_file.write_text("not a folder")
    for out in (a_file, a_file / "below", Path("/proc/ketamine-cds-out")):
        line = _one_line(_audit(str(synthetic / "small.csv"), "--out", str(out)), "--out")
        assert "cannot read input" not in line and str(out) in line
        line = _one_line(cli("synth", "--rows", "5", "--out", str(out)), "--out")
        assert "cannot read input" not in line


def test_an_input_that_cannot_be_read_is_still_named_as_the_input(tmp_path: Path) -> None:
    done = _audit(str(tmp_path / "missing.csv"), "--out", str(tmp_path / "out"))
    _one_line(done, "INPUT")
