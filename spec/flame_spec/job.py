"""The job spec: what a user submits next to a design and a code version.

Every bound a task would trip over later is checked here: the rule and selector names and
their keyword models (:mod:`flame_spec.rules`), finite numbers everywhere (hyperparameters
included), strict types (``"10"`` is not a number), and the documented ranges below.

===================  =========================================================
field                accepted values
===================  =========================================================
``rounds``           1 … 100,000
``min_trainers``     1 … 100,000
``round_timeout``    seconds, > 0 and ≤ 86,400 (one day)
``quorum_grace``     seconds, 0 … 86,400 (default 300): how long the job may stay
                     below ``min_trainers`` (the aggregator keeps the model and waits
                     for trainers to come back) before it fails with quorum lost;
                     0 fails at once
``max_run_time``     seconds, > 0 and ≤ 2,592,000 (30 days)
``seed``             0 … 2**63 - 1
``evaluation``       ``{"every": k, "fraction": f}``: after every k-th round, an
                     evaluation-only round over a share f (0 < f ≤ 1) of the sites
``kind``             ``training`` (default), ``vertical``, ``statistics``,
                     ``cross-site-evaluation`` (:data:`JOB_KINDS`)
``hyperparameters``  a JSON object (≤ 16 levels, ≤ 10,000 values, finite numbers);
                     the well-known keys ``epochs`` and ``local_steps`` (1 … 100,000),
                     ``batch_size`` (1 … 10,000,000) and ``lr`` (> 0, ≤ 1e6) are checked
===================  =========================================================
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from flame_spec.design import Backend
from flame_spec.errors import FieldProblem
from flame_spec.kinds import check_kind_parameters
from flame_spec.rules import RULES, SELECTORS, Params
from flame_spec.types import JsonObject, SpecModel

MAX_ROUNDS = 100_000
MAX_ROUND_TIMEOUT = 86_400.0
MAX_RUN_TIME = 30 * 86_400.0
DEFAULT_QUORUM_GRACE = 300.0  # five minutes: a node's reboot or a trainer's restart fits

#: What a job does. ``training``: federated training (one data-consumer role); ``vertical``:
#: private set intersection then split learning between parties that hold different columns
#: of the same samples (several data-consumer roles); ``statistics``: federated statistics;
#: ``cross-site-evaluation``: federated training, then every site's model and the global model
#: evaluated on every site's data.
JobKind = Literal["training", "vertical", "statistics", "cross-site-evaluation"]
JOB_KINDS: tuple[str, ...] = ("training", "vertical", "statistics", "cross-site-evaluation")

_INT_HYPERPARAMETERS = {"epochs": 100_000, "local_steps": 100_000, "batch_size": 10_000_000}


class _Choice(SpecModel):
    """A name from a table of rules and the keyword arguments its model accepts."""

    KIND: ClassVar[str] = ""
    TABLE: ClassVar[dict[str, type[Params]]] = {}

    name: str
    kwargs: dict[str, Any] = Field(default_factory=dict, validate_default=True)

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        name = value.lower()
        if name not in cls.TABLE:
            known = ", ".join(sorted(cls.TABLE))
            raise ValueError(f"unknown {cls.KIND} {value!r}; choose one of {known}")
        return name

    @field_validator("kwargs")
    @classmethod
    def _valid_kwargs(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if "name" in info.data:  # else the name was refused already
            cls.TABLE[info.data["name"]].model_validate(value)
        return value

    def params(self) -> Params:
        """The validated keyword arguments."""
        return self.TABLE[self.name].model_validate(self.kwargs)


class OptimizerSpec(_Choice):
    """Server-side aggregation rule (:data:`flame_spec.rules.RULES`) and its keyword arguments."""

    KIND: ClassVar[str] = "optimizer"
    TABLE: ClassVar[dict[str, type[Params]]] = RULES

    name: str = "fedavg"


class SelectorSpec(_Choice):
    """Trainer selection (:data:`flame_spec.rules.SELECTORS`) and its keyword arguments."""

    KIND: ClassVar[str] = "selector"
    TABLE: ClassVar[dict[str, type[Params]]] = SELECTORS

    name: str = "all"


class TrackingSpec(SpecModel):
    """Where the top aggregator logs the run to MLflow. ``enabled: false`` logs nothing there
    (no run, no registered model); the round metrics still reach the control plane."""

    enabled: bool = True
    uri: str | None = Field(default=None, max_length=2048)  # default: the platform's server
    experiment: str | None = Field(default=None, min_length=1, max_length=256)  # default: job
    selection_metric: str = Field(default="accuracy", min_length=1, max_length=250)
    mode: Literal["max", "min"] = "max"
    # "register" would shadow BaseModel.register; the JSON key stays "register"
    register_model: bool = Field(default=True, alias="register")

    @model_validator(mode="after")
    def _uri_needs_tracking(self) -> TrackingSpec:
        if not self.enabled and self.uri is not None:
            raise FieldProblem("uri", "is set but tracking is disabled (enabled: false)")
        return self


class EvaluationSpec(SpecModel):
    """Federated evaluation on a schedule: after every ``every``-th round the top aggregator
    asks ``fraction`` of the available sites to evaluate the global model (no training);
    their metrics, weighted by evaluation samples, are logged as ``eval/<name>``."""

    every: int = Field(ge=1, le=MAX_ROUNDS)
    fraction: float = Field(default=1.0, gt=0, le=1)


class JobSpec(SpecModel):
    """What a user submits next to a design and a code version."""

    kind: JobKind = "training"
    rounds: int = Field(default=10, ge=1, le=MAX_ROUNDS)
    datasets: dict[str, list[str]] = Field(default_factory=dict)  # group -> dataset ids/names
    hyperparameters: JsonObject = Field(default_factory=dict)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    selector: SelectorSpec = Field(default_factory=SelectorSpec)
    min_trainers: int = Field(default=1, ge=1, le=MAX_ROUNDS)
    max_run_time: float = Field(default=3600.0, gt=0, le=MAX_RUN_TIME)  # seconds
    round_timeout: float = Field(default=60.0, gt=0, le=MAX_ROUND_TIMEOUT)  # per round, seconds
    # how long fewer than min_trainers may be left before the job fails, seconds
    quorum_grace: float = Field(default=DEFAULT_QUORUM_GRACE, ge=0, le=MAX_ROUND_TIMEOUT)
    backend: Backend | None = None  # overrides every channel's backend when set
    seed: int = Field(default=0, ge=0, le=2**63 - 1)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    evaluation: EvaluationSpec | None = None

    @field_validator("hyperparameters")
    @classmethod
    def _known_hyperparameters(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key, limit in _INT_HYPERPARAMETERS.items():
            if key in value:
                v = value[key]
                if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= limit:
                    raise FieldProblem(key, f"must be an integer from 1 to {limit}, not {v!r}")
        if "lr" in value:
            v = value["lr"]
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v <= 1e6:
                raise FieldProblem("lr", f"must be a number above 0 and at most 1e6, not {v!r}")
        return value

    @model_validator(mode="after")
    def _kind_parameters(self) -> JobSpec:
        check_kind_parameters(self.kind, self.hyperparameters)
        return self

    def trainers_problem(self, trainers: int) -> str | None:
        """Why this spec cannot run with ``trainers`` data-consumer tasks, if it cannot."""
        if trainers < self.min_trainers:
            return f"min_trainers is {self.min_trainers} but the job has only {trainers} trainer(s)"
        problem = self.optimizer.params().participants_problem(trainers)
        return f"optimizer {self.optimizer.name!r} {problem}" if problem else None
