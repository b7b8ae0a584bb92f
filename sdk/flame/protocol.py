"""The data-plane protocol: one frozen type per message kind.

Roles build and read these instead of untyped ``meta`` dicts. On the wire each is the same
:class:`~flame.messages.Message` envelope as before (``kind``, ``round``, ``meta_json``, tensors as
safetensors), so the bytes do not change (``tests/unit/sdk/test_protocol.py`` pins them):

==================  ==========================  ===============================================
type                kind                        meta
==================  ==========================  ===============================================
:class:`Join`       ``join``                    ``trainers`` — a trainer (or a middle aggregator
                                                for its group) is ready for rounds (+ ``resumed``:
                                                a restarted middle aggregator)
:class:`Model`      ``weights``                 ``instructions`` (only when given) — the
                                                global model for round r, and what this
                                                trainer is asked to do in it
:class:`Final`      ``done``                    (none) — the final model: evaluate it, stop
:class:`Update`     ``update``                  samples, metrics, trainers, base round, duration
                                                (+ ``steps``, ``planned_steps``: partial work)
:class:`Decline`    ``decline``                 ``reason`` — a trainer sits this round out
:class:`Evaluate`   ``evaluate``                (none) — evaluate this model, do not train
:class:`EvalReport` ``evaluate.result``         as :class:`Update`, without tensors
:class:`FinalEval`  ``eval``                    as :class:`Update`, without tensors
:class:`Skip`       ``skip``                    ``trainers`` (0): a middle aggregator had nobody
:class:`Abort`      ``abort``                   ``reason``, ``code`` — the job failed upstream
:class:`Assign`     ``assign``                  ``trainers`` (to a middle aggregator) or
                                                ``aggregator`` (to a trainer)
:class:`RoundEnd`   ``round.end``               ``final`` — top aggregator -> coordinator
:class:`Reduce`     ``allreduce``               ``step`` — one hop of a ring all-reduce
==================  ==========================  ===============================================

Kinds of the jobs beyond averaging (vertical, statistics, cross-site evaluation):

======================  ======================  ===============================================
type                    kind                    meta (tensors)
======================  ======================  ===============================================
:class:`PsiBlinded`     ``psi.blinded``         (``points``: a party's own ids, blinded, shuffled)
:class:`PsiReblinded`   ``psi.reblinded``       (``points``: the other party's values blinded
                                                again, in the order received)
:class:`PsiResult`      ``psi.result``          (``positions``: which of the receiver's own
                                                blinded values are in the intersection)
:class:`Embedding`      ``split.embedding``     ``step``, ``phase`` (``embedding``: a batch's
                                                bottom-model output)
:class:`Gradient`       ``split.gradient``      ``step``, ``loss`` (``gradient``: d loss /
                                                d embedding)
:class:`StatsRequest`   ``stats.request``       ``phase`` (``moments`` | ``histogram`` |
                                                ``done``) (``edges`` for histograms)
:class:`StatsReport`    ``stats.report``        ``phase``, ``features``, ``suppressed``
                                                (moments or ``histogram`` counts)
:class:`SiteReady`      ``xsite.ready``         ``eval_samples`` — a site loaded its data
:class:`LocalModel`     ``xsite.local``         a site's own last trained model
:class:`EvalRequest`    ``xsite.request``       ``model``, ``last`` (the model to evaluate)
:class:`EvalResult`     ``xsite.result``        ``model``, ``metrics``, ``eval_samples``
======================  ======================  ===============================================

``X.read(msg)`` checks the message is an ``X`` with well-formed fields and returns it; anything
else raises :class:`~flame.errors.RejectedUpdate` with the reason (which the receiver logs).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, TypeVar

from flame.errors import ConfigError, FlameError, RejectedUpdate
from flame.instructions import MAX_TEXT, Instructions
from flame.messages import Message
from flame.tensors import Weights

B = TypeVar("B", bound="Body")


@dataclass(frozen=True)
class Body:
    """Base of every message type; ``round`` and ``weights`` travel in the envelope."""

    KIND: ClassVar[str] = ""

    round: int = 0
    weights: Weights | None = field(default=None, compare=False, repr=False)

    def meta(self) -> dict[str, Any]:
        """The JSON fields of this kind, in declaration order (that order is on the wire);
        optional fields that are ``None`` are left out."""
        out: dict[str, Any] = {}
        for name in _meta_fields(type(self)):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    def message(self) -> Message:
        return Message(kind=self.KIND, round=self.round, meta=self.meta(), weights=self.weights)

    @classmethod
    def read(cls: type[B], msg: Message, *, tensors: bool = True) -> B:
        """``msg`` as this type; :class:`RejectedUpdate` says why it is not one. ``tensors``
        False: without the message's tensors (a caller that takes them from ``msg``)."""
        if msg.kind != cls.KIND:
            raise RejectedUpdate(f"expected {cls.KIND!r}, got {msg.kind!r}", msg.sender)
        try:
            values = cls._parse(msg.meta, msg.round)
        except (TypeError, ValueError) as exc:
            raise RejectedUpdate(f"malformed {cls.KIND!r}: {exc}", msg.sender) from None
        return cls(round=msg.round, weights=msg.weights if tensors else None, **values)

    @classmethod
    def expect(cls: type[B], msg: Message) -> B:
        """``msg`` as this type, where anything else is a protocol error that ends the task
        (a message from upstream: the model, an assignment)."""
        try:
            return cls.read(msg)
        except RejectedUpdate as exc:
            raise FlameError(f"from {msg.sender or 'upstream'}: {exc.reason}") from None

    @classmethod
    def _parse(cls, meta: Mapping[str, Any], rnd: int) -> dict[str, Any]:
        """The typed fields from the wire's JSON (``rnd``: the envelope's round)."""
        return {}


_META_FIELDS: dict[type, tuple[str, ...]] = {}


def _meta_fields(cls: type[Body]) -> tuple[str, ...]:
    """The JSON fields of a kind, in declaration order (looked up once per class)."""
    names = _META_FIELDS.get(cls)
    if names is None:
        names = tuple(f.name for f in fields(cls) if f.name not in ("round", "weights"))
        _META_FIELDS[cls] = names
    return names


# -- checks of JSON values ----------------------------------------------------------------------


def _count(meta: Mapping[str, Any], key: str, default: float) -> float:
    v = meta.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
        raise ValueError(f"{key} {v!r} is not a non-negative number")
    return float(v)


def _int(meta: Mapping[str, Any], key: str, default: int, *, low: int | None = None) -> int:
    v = meta.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or (low is not None and v < low):
        raise ValueError(f"{key} {v!r} is not {'a count' if low == 0 else 'an integer'}")
    return v


def _metrics(meta: Mapping[str, Any]) -> dict[str, float]:
    v = meta.get("metrics", {})
    if not isinstance(v, dict) or not all(
        isinstance(k, str)
        and isinstance(x, int | float)
        and not isinstance(x, bool)
        and math.isfinite(x)
        for k, x in v.items()
    ):
        raise ValueError("metrics must be a dict of finite numbers")
    return {k: float(x) for k, x in v.items()}


def _str(meta: Mapping[str, Any], key: str) -> str:
    v = meta.get(key)
    if not isinstance(v, str):
        raise ValueError(f"{key} {v!r} is not a string")
    return v


# -- the kinds ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Join(Body):
    """A trainer finished ``initialize`` / ``load_data`` and is ready for rounds (a middle
    aggregator sends one up once enough of its group has joined). Round clocks start from
    joins, so slow task start-up is not a round timeout. ``trainers``: how many trainers the
    sender stands for."""

    KIND: ClassVar[str] = "join"

    trainers: int = 1
    # a restarted middle aggregator that resumed from its checkpoint (``round``: the last model
    # it had from above, 0 for none): an aggregator waiting on it for a later round sends that
    # round's model again, which the dead attempt may have taken with it
    resumed: bool | None = None

    @classmethod
    def _parse(cls, meta: Mapping[str, Any], rnd: int) -> dict[str, Any]:
        resumed = meta.get("resumed")
        if resumed is not None and not isinstance(resumed, bool):
            raise ValueError(f"resumed {resumed!r} is not a boolean")
        return {"trainers": _int(meta, "trainers", 1, low=0), "resumed": resumed}


@dataclass(frozen=True)
class Model(Body):
    """The global model of round ``round`` (plus the strategy's extras, packed), with what the
    receiving trainer is asked to do this round (:mod:`flame.instructions`), if anything."""

    KIND: ClassVar[str] = "weights"

    instructions: Instructions | None = None

    def meta(self) -> dict[str, Any]:
        if self.instructions is None or self.instructions.empty:
            return {}
        return {"instructions": self.instructions.to_json()}

    @classmethod
    def _parse(cls, meta: Mapping[str, Any], rnd: int) -> dict[str, Any]:
        if "instructions" not in meta:
            return {}
        try:
            return {"instructions": Instructions.from_json(meta["instructions"])}
        except ConfigError as exc:
            raise ValueError(str(exc)) from None


@dataclass(frozen=True)
class Final(Body):
    """The final model: evaluate it, answer with :class:`FinalEval`, stop."""

    KIND: ClassVar[str] = "done"


@dataclass(frozen=True)
class Update(Body):
    """A trainer's (or a middle aggregator's) result of a round.

    ``num_samples`` weights the update, ``eval_samples`` the metrics (of the model it received),
    ``trainers`` says how many trainers it stands for, ``base_round`` which global model it
    started from (staleness), ``duration`` how long the round took it.
    """

    KIND: ClassVar[str] = "update"

    num_samples: float = 0.0
    eval_samples: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    trainers: int = 1
    base_round: int = 0
    duration: float = 0.0
    steps: float | None = None  # local steps done (partial work: fewer than planned)
    planned_steps: float | None = None  # local steps a whole round would have been

    @property
    def work(self) -> float:
        """The share of the planned local work done (1.0 when the trainer did not say)."""
        if self.steps is None or not self.planned_steps:
            return 1.0
        return min(self.steps / self.planned_steps, 1.0)

    @classmethod
    def _parse(cls, meta: Mapping[str, Any], rnd: int) -> dict[str, Any]:
        num_samples = _count(meta, "num_samples", 0.0)
        values = {
            "num_samples": num_samples,
            "eval_samples": _count(meta, "eval_samples", num_samples),
            "metrics": _metrics(meta),
            "trainers": _int(meta, "trainers", 1, low=0),
            "base_round": _int(meta, "base_round", rnd),
            "duration": _count(meta, "duration", 0.0),
        }
        for key in ("steps", "planned_steps"):
            if meta.get(key) is not None:
                values[key] = _count(meta, key, 0.0)
        return values


@dataclass(frozen=True)
class Evaluate(Body):
    """Evaluate this global model on the local data (a scheduled federated evaluation); no
    training. The answer is an :class:`EvalReport`."""

    KIND: ClassVar[str] = "evaluate"


@dataclass(frozen=True)
class EvalReport(Update):
    """A site's metrics of an :class:`Evaluate` request's model (no tensors)."""

    KIND: ClassVar[str] = "evaluate.result"


@dataclass(frozen=True)
class Decline(Body):
    """A trainer sits round ``round`` out (``reason``: why, e.g. "battery low"); the aggregator
    counts it at once instead of waiting for the round's timeout."""

    KIND: ClassVar[str] = "decline"

    reason: str = "declined"

    @classmethod
    def _parse(cls, meta: Mapping[str, Any], rnd: int) -> dict[str, Any]:
        return {"reason": _str(meta, "reason")[:MAX_TEXT]}


@dataclass(frozen=True)
class FinalEval(Update):
    """Metrics of the final model (no tensors)."""

    KIND: ClassVar[str] = "eval"


@dataclass(frozen=True)
class Skip(Body):
    """A middle aggregator heard from none of its trainers this round."""

    KIND: ClassVar[str] = "skip"

    trainers: int = 0

    @classmethod
    def _parse(cls, meta: Mapping[str, Any], rnd: int) -> dict[str, Any]:
        return {"trainers": _int(meta, "trainers", 0, low=0)}


@dataclass(frozen=True)
class Abort(Body):
    """The job failed upstream; ``code`` is ``quorum-lost`` or ``failed``."""

    KIND: ClassVar[str] = "abort"

    reason: str = "the job was aborted"
    code: str = "failed"

    @classmethod
    def _parse(cls, meta: Mapping[str, Any], rnd: int) -> dict[str, Any]:
        return {
            "reason": str(meta.get("reason", "the job was aborted")),
            "code": str(meta.get("code", "failed")),
        }


@dataclass(frozen=True)
class Assign(Body):
    """The coordinator's pairing for one round: to a middle aggregator, the ``trainers`` it
    serves; to a trainer, the ``aggregator`` it uses. Exactly one is set."""

    KIND: ClassVar[str] = "assign"

    trainers: list[str] | None = None
    aggregator: str | None = None

    def meta(self) -> dict[str, Any]:
        if self.trainers is not None:
            return {"trainers": list(self.trainers)}
        return {"aggregator": self.aggregator}

    @classmethod
    def _parse(cls, meta: Mapping[str, Any], rnd: int) -> dict[str, Any]:
        if "trainers" in meta:
            ids = meta["trainers"]
            if not isinstance(ids, list) or not all(isinstance(t, str) for t in ids):
                raise ValueError("trainers must be a list of task ids")
            return {"trainers": sorted(ids)}
        return {"aggregator": _str(meta, "aggregator")}


@dataclass(frozen=True)
class RoundEnd(Body):
    """Top aggregator -> coordinator: round ``round`` is over (``final``: the job is)."""

    KIND: ClassVar[str] = "round.end"

    final: bool = False

    @classmethod
    def _parse(cls, meta: Mapping[str, Any], rnd: int) -> dict[str, Any]:
        return {"final": bool(meta.get("final"))}


@dataclass(frozen=True)
class Reduce(Body):
    """One hop of a ring all-reduce (``step`` -1: an all-gather of a short vector)."""

    KIND: ClassVar[str] = "allreduce"

    step: int = 0

    @classmethod
    def _parse(cls, meta: Mapping[str, Any], rnd: int) -> dict[str, Any]:
        return {"step": _int(meta, "step", 0)}


# -- vertical: private set intersection ---------------------------------------------------------


def _choice(meta: Mapping[str, Any], key: str, allowed: tuple[str, ...]) -> str:
    v = meta.get(key)
    if v not in allowed:
        raise ValueError(f"{key} {v!r} is not one of {', '.join(allowed)}")
    return str(v)


@dataclass(frozen=True)
class PsiBlinded(Body):
    """A party's own ids, hashed to the group, blinded with its key and shuffled."""

    KIND: ClassVar[str] = "psi.blinded"


@dataclass(frozen=True)
class PsiReblinded(Body):
    """The values another party sent, blinded again with the receiver's key, same order."""

    KIND: ClassVar[str] = "psi.reblinded"


@dataclass(frozen=True)
class PsiResult(Body):
    """Which of the receiver's own blinded values (positions in the order it sent them) are
    in the intersection of every party's ids."""

    KIND: ClassVar[str] = "psi.result"


# -- vertical: split learning -------------------------------------------------------------------


@dataclass(frozen=True)
class Embedding(Body):
    """A feature party's bottom-model output for batch ``step`` of round ``round``."""

    KIND: ClassVar[str] = "split.embedding"

    step: int = 0
    phase: str = "train"  # "train": a gradient comes back; "eval": none does

    @classmethod
    def _parse(cls, meta: Mapping[str, Any], rnd: int) -> dict[str, Any]:
        return {"step": _int(meta, "step", 0, low=0), "phase": _choice(meta, "phase", PHASES)}


PHASES = ("train", "eval")


@dataclass(frozen=True)
class Gradient(Body):
    """The label party's gradient of the loss with respect to one party's embedding."""

    KIND: ClassVar[str] = "split.gradient"

    step: int = 0
    loss: float = 0.0

    @classmethod
    def _parse(cls, meta: Mapping[str, Any], rnd: int) -> dict[str, Any]:
        return {"step": _int(meta, "step", 0, low=0), "loss": _count(meta, "loss", 0.0)}


# -- federated statistics -----------------------------------------------------------------------

STATS_PHASES = ("moments", "histogram", "done")


@dataclass(frozen=True)
class StatsRequest(Body):
    """The statistics server asks the sites for one phase (``done``: the job is over)."""

    KIND: ClassVar[str] = "stats.request"

    phase: str = "moments"

    @classmethod
    def _parse(cls, meta: Mapping[str, Any], rnd: int) -> dict[str, Any]:
        return {"phase": _choice(meta, "phase", STATS_PHASES)}


@dataclass(frozen=True)
class StatsReport(Body):
    """A site's answer to one phase; ``suppressed``: it holds fewer rows than the job's
    minimum count and sends no values."""

    KIND: ClassVar[str] = "stats.report"

    phase: str = "moments"
    features: list[str] = field(default_factory=list)
    suppressed: bool = False

    @classmethod
    def _parse(cls, meta: Mapping[str, Any], rnd: int) -> dict[str, Any]:
        names = meta.get("features", [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError("features must be a list of names")
        suppressed = meta.get("suppressed", False)
        if not isinstance(suppressed, bool):
            raise ValueError("suppressed must be true or false")
        return {
            "phase": _choice(meta, "phase", STATS_PHASES[:2]),
            "features": list(names),
            "suppressed": suppressed,
        }


# -- cross-site evaluation ----------------------------------------------------------------------


@dataclass(frozen=True)
class SiteReady(Body):
    """A site of a cross-site evaluation loaded its data and passed its checks."""

    KIND: ClassVar[str] = "xsite.ready"

    eval_samples: float = 0.0

    @classmethod
    def _parse(cls, meta: Mapping[str, Any], rnd: int) -> dict[str, Any]:
        return {"eval_samples": _count(meta, "eval_samples", 0.0)}


@dataclass(frozen=True)
class LocalModel(Body):
    """A site's own model after its last local training (cross-site evaluation)."""

    KIND: ClassVar[str] = "xsite.local"


@dataclass(frozen=True)
class EvalRequest(Body):
    """Evaluate this model (``model`` names it) on the local data; ``last``: no more follow."""

    KIND: ClassVar[str] = "xsite.request"

    model: str = ""
    last: bool = False

    @classmethod
    def _parse(cls, meta: Mapping[str, Any], rnd: int) -> dict[str, Any]:
        last = meta.get("last", False)
        if not isinstance(last, bool):
            raise ValueError("last must be true or false")
        return {"model": _str(meta, "model"), "last": last}


@dataclass(frozen=True)
class EvalResult(Body):
    """A site's metrics of one model on its local data."""

    KIND: ClassVar[str] = "xsite.result"

    model: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    eval_samples: float = 0.0

    @classmethod
    def _parse(cls, meta: Mapping[str, Any], rnd: int) -> dict[str, Any]:
        return {
            "model": _str(meta, "model"),
            "metrics": _metrics(meta),
            "eval_samples": _count(meta, "eval_samples", 0.0),
        }
