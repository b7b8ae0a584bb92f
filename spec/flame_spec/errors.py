"""The one error this package raises: a spec that cannot be accepted, and where it is wrong."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError


class SpecError(ValueError):
    """A design, job spec or task config is invalid.

    ``problems`` lists ``(field path, message)`` pairs, e.g. ``("optimizer.kwargs.f", "Input
    should be greater than or equal to 0")``; ``str()`` joins them into one sentence.
    """

    def __init__(self, what: str, problems: Sequence[tuple[str, str]]) -> None:
        self.what = what
        self.problems = list(problems)
        parts = [f"{loc}: {msg}" if loc else msg for loc, msg in self.problems]
        super().__init__(f"invalid {what}: " + "; ".join(parts))

    @property
    def fields(self) -> list[str]:
        """The dotted paths of the offending fields (empty string: the whole object)."""
        return [loc for loc, _ in self.problems]

    @classmethod
    def of(cls, what: str, exc: ValidationError, prefix: str = "") -> SpecError:
        """Turn pydantic's errors into one :class:`SpecError` naming each field."""
        problems = []
        for err in exc.errors():
            head = prefix.split(".") if prefix else []
            path = [str(p) for p in (*head, *err["loc"])]
            msg = str(err["msg"]).removeprefix("Value error, ")
            inner = (err.get("ctx") or {}).get("error")
            if isinstance(inner, FieldProblem):  # a nested part of the field is wrong
                path.append(inner.path)
                msg = inner.reason
            problems.append((".".join(path), msg))
        return cls(what, problems)


class FieldProblem(ValueError):
    """Raised by a validator to say which part inside its field is wrong (``path`` is dotted)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
