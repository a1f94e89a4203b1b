"""Every statement of the knowledge base is one hop from its id to its data, its rule, its tests and its page
(README, "What it knows"), and none lacks any of them:

- its data: ``src/ketamine_cds/knowledge/statements/<id>.toml``;
- its rule: exactly one function registered under its id with ``@rule`` in ``_engine.py``, whose source
  names the id (a search for the id finds it), and every finding of the statement is added while it runs;
- its messages: each message key the statement declares (its own and those it includes) is produced by its
  rule on some question of the grid (``message_grid.py``), so none is dead wording;
- its tests: one module, ``tests/statements/test_<id with underscores>.py``, whose docstring starts with
  the id;
- its page: ``/statements/<id>``, the link every card of the statement gives, served with its title.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from markupsafe import escape

from ketamine_cds import _engine, load_knowledge
from ketamine_cds.service import page
from message_grid import assessments

KB = load_knowledge()
IDS = sorted(KB.statements)
ROOT = Path(__file__).resolve().parents[1]
STATEMENT_TESTS = ROOT / "tests" / "statements"
STATEMENT_DATA = ROOT / "src" / "ketamine_cds" / "knowledge" / "statements"


@pytest.mark.parametrize("statement_id", IDS)
def test_the_statement_has_its_data_file(statement_id: str) -> None:
    path = STATEMENT_DATA / f"{statement_id}.toml"
    assert tomllib.loads(path.read_text())["id"] == statement_id


def test_every_rule_is_registered_under_statements_of_the_knowledge_base() -> None:
    assert sorted(_engine.RULES) == IDS


def test_a_second_rule_for_a_statement_is_refused() -> None:
    with pytest.raises(ValueError, match="acute-sleep-apnea has a rule already: acute_sleep_apnea"):
        _engine.rule("acute-sleep-apnea")(lambda: None)
    assert _engine.RULES["acute-sleep-apnea"] is _engine.acute_sleep_apnea


@pytest.mark.parametrize("statement_id", IDS)
def test_the_statement_has_exactly_one_rule_that_names_it(statement_id: str) -> None:
    rule = _engine.RULES.get(statement_id)
    assert rule is not None, f"no rule for {statement_id}: @rule({statement_id!r}) in _engine.py"
    assert inspect.getmodule(rule) is _engine
    assert f'"{statement_id}"' in inspect.getsource(rule)  # in its @rule(...): found by searching the id


# --- which rule adds each finding --------------------------------------------------------------------------


def _produced() -> dict[tuple[str, str], set[str]]:
    """(statement, message key) -> the names of the rules it was added in, over the grid: the innermost
    registered rule on the stack when the engine adds the finding ("" when none is)."""
    rules = {f.__code__: f.__name__ for f in set(_engine.RULES.values()) if hasattr(f, "__code__")}
    produced: dict[tuple[str, str], set[str]] = {}
    add = _engine._Context.add

    def traced(ctx: _engine._Context, statement_id: str, message: str, **params: object) -> None:
        frame = sys._getframe(1)
        while frame is not None and frame.f_code not in rules:
            frame = frame.f_back  # type: ignore[assignment]
        name = rules[frame.f_code] if frame is not None else ""
        produced.setdefault((statement_id, message), set()).add(name)
        add(ctx, statement_id, message, **params)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_engine._Context, "add", traced)
        for _ in assessments():
            pass
    return produced


@pytest.fixture(scope="module")
def produced() -> dict[tuple[str, str], set[str]]:
    return _produced()


@pytest.mark.parametrize("statement_id", IDS)
def test_every_message_of_the_statement_is_produced_by_its_rule(
    statement_id: str, produced: dict[tuple[str, str], set[str]]
) -> None:
    rule = _engine.RULES[statement_id].__name__
    statement = KB.statements[statement_id]
    unreached = [key for key in statement.messages if rule not in produced.get((statement_id, key), set())]
    assert unreached == [], f"{statement_id}: messages its rule {rule} never produces on the grid"
    elsewhere = {
        key: sorted(by - {rule}) for (sid, key), by in produced.items() if sid == statement_id and by - {rule}
    }
    assert elsewhere == {}, f"{statement_id}: findings added outside its rule {rule}"


# --- its tests ---------------------------------------------------------------------------------------------


def _claimed() -> Iterator[tuple[str, Path]]:
    """(the statement id a module's docstring starts with, the module) for each module of tests/statements."""
    for path in sorted(STATEMENT_TESTS.glob("test_*.py")):
        docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
        yield docstring.partition(":")[0].strip(), path


@pytest.mark.parametrize("statement_id", IDS)
def test_the_statement_has_one_test_module(statement_id: str) -> None:
    module = STATEMENT_TESTS / f"test_{statement_id.replace('-', '_')}.py"
    assert module.is_file(), f"{statement_id}: no {module.relative_to(ROOT)}"
    claiming = [path.name for sid, path in _claimed() if sid == statement_id]
    assert claiming == [module.name], f"{statement_id}: its docstring must start with '{statement_id}:'"


def test_every_statement_test_module_is_about_a_statement() -> None:
    assert sorted(sid for sid, _ in _claimed()) == IDS


# --- its page ----------------------------------------------------------------------------------------------


async def _get_pages() -> dict[str, tuple[int, str]]:
    app = FastAPI()
    app.state.kb = KB
    app.include_router(page.router)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://cds.test") as client:
        responses = {sid: await client.get(f"/statements/{sid}") for sid in IDS}  # the link its cards give
    return {sid: (r.status_code, r.text) for sid, r in responses.items()}


@pytest.fixture(scope="module")
def pages() -> dict[str, tuple[int, str]]:
    """Each statement's page, from the page's routes in this process."""
    return asyncio.run(_get_pages())


@pytest.mark.parametrize("statement_id", IDS)
def test_the_statement_has_a_page(statement_id: str, pages: dict[str, tuple[int, str]]) -> None:
    status, text = pages[statement_id]
    assert status == 200, f"{statement_id}: no page at /statements/{statement_id}"
    title = KB.statements[statement_id].title
    assert statement_id in text and str(escape(title)) in text  # as the template writes it
