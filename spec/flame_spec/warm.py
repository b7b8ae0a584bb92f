"""What an agent (a flamelet, the controller's local deployer) and a warm runner
(``python -m flame.warm``) say to each other: one order line on the runner's stdin, and the
runner's exit status when its input ended before an order."""

from __future__ import annotations

import json

EXIT_UNUSED = 75  # EX_TEMPFAIL: no task was handed over; nothing ran


def order_line(argv: list[str], env: dict[str, str]) -> bytes:
    """The order: the task's command after the interpreter, and what to add to its
    environment."""
    return json.dumps({"argv": argv, "env": env}).encode() + b"\n"


def failed_unused(code: int | None) -> bool:
    """Whether a runner that ended before its order failed on its own: not killed (a signal),
    not told that its agent went away. Its Python cannot run runners (no SDK, say)."""
    return code is not None and 0 < code < 128 and code != EXIT_UNUSED
