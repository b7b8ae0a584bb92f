"""``asyncio.run`` for a coroutine whose result is large (a model, every task's results).

``asyncio.run`` keeps its main task in the SIGINT handler it installs; restoring the previous
handler at the end looks the handler up in an enum, whose miss formats the handler's ``repr``:
the task's, result included. For ``flame.simulate`` at 1,000 trainers that was 4 s of a 5.2 s
run (issue 21). :func:`run` hands the result out beside the task, so the end of a run costs
nothing that grows with its result.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coro)``, but the task the runner holds returns nothing."""
    box: list[T] = []

    async def main() -> None:
        box.append(await coro)

    asyncio.run(main())
    return box[0]
