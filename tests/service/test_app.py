"""Start-up and shutdown of the application, in process."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

from ketamine_cds.service.app import create_app
from ketamine_cds.service.settings import Settings


def test_start_up_takes_the_long_lived_heap_out_of_the_collectors_reach(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, allow_unauthenticated=True))

    statements = app.state.kb.statements  # a dict: tracked by the collector

    def walked() -> bool:  # frozen objects are in no generation, so get_objects() leaves them out
        return any(o is statements for o in gc.get_objects())

    async def started() -> bool:
        async with app.router.lifespan_context(app):
            return walked()

    gc.unfreeze()
    try:
        assert walked()
        assert not asyncio.run(started())
    finally:
        gc.unfreeze()
