"""Cross-site evaluation: a job of kind ``cross-site-evaluation``.

The job trains as a central FedAvg job would (the same Trainer and Aggregator code), then every
site's own model (its model after its last local training) and the final global model are
evaluated on every site's local data:

    trainer:    init >> ready >> Loop(until=done)(fetch >> share >> step >> reduce >> upload)
                     >> submit_local >> Loop(until=evaluated)(evaluate_model) >> finish
    aggregator: init >> roll_call
                     >> Loop(until=done)(fetch >> distribute >> collect >> every_site
                                         >> aggregate >> upload)
                     >> gather_local >> cross_evaluate >> publish >> finish

Every site's model is a row and its data a column, so every site is needed: ``roll_call``
waits until each site has loaded its data and passed its checks (or fails the job with the
reason a site gave, before anyone trains), and a site lost during training fails the job.

:func:`flame.roles.loader.role_class_for` mixes these into the user's Trainer and Aggregator
classes when the job's kind says so, so the central example's code runs unchanged. Sites and
models are named by the dataset the job spec gives each site (the same wherever the job runs).
Every site receives every other site's model: that is what cross-site evaluation is.

The aggregator's result (``report``) is the matrix ``matrix[model][site] = metrics``; its
tracker logs each cell as ``xsite/<model>/<site>/<metric>`` (at step ``rounds``) and the whole
report as ``cross_site.json``. A site with fewer evaluation samples than the job's
``min_samples`` fails the job before training.
"""

from __future__ import annotations

from typing import Any

from flame.composer import Composable, Loop, tasklet
from flame.errors import ConfigError, FlameError, RejectedUpdate
from flame.protocol import EvalRequest, EvalResult, LocalModel, SiteReady
from flame.roles.aggregator import Aggregator
from flame.roles.base import RoleResult
from flame.roles.sites import site_labels
from flame.roles.trainer import Trainer
from flame.tensors import Weights, check_update, copy_weights

GLOBAL = "global"


def _central(role: Trainer | Aggregator) -> None:
    topo = role.topology
    if topo.peer is not None or topo.coordinator is not None or topo.tier > 1:
        raise ConfigError(
            "cross-site evaluation runs on the central topology (trainers and one aggregator)"
        )


class CrossSiteTrainer(Trainer):
    """A site: trains as usual, then submits its own model and scores every model it gets."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _central(self)
        self.local_weights: Weights = {}
        self.evaluated = False

    def compose(self) -> Composable:
        return (
            self.init
            >> self.ready
            >> Loop(until=self.done)(
                self.fetch >> self.share >> self.step >> self.reduce >> self.upload
            )
            >> self.submit_local
            >> Loop(until=lambda: self.evaluated)(self.evaluate_model)
            >> self.finish
        )

    @tasklet
    async def init(self) -> None:
        await self.call_user(self.initialize)
        await self.call_user(self.load_data)
        need = int(self.hyperparameters.get("min_samples", 1))
        have = self.eval_size if self.eval_size is not None else self.dataset_size
        if have < need:
            ds = self.config.dataset.name if self.config.dataset else self.config.task_id
            raise ConfigError(
                f"dataset {ds!r} has {have} evaluation samples; the job needs at least "
                f"min_samples={need}"
            )

    def _step(self) -> None:
        super()._step()
        if not self.final:
            self.local_weights = copy_weights(self.weights)

    @tasklet
    async def ready(self) -> None:
        assert self.topology.upstream is not None and self.upstream_peer is not None
        eval_size = float(self.eval_size if self.eval_size is not None else self.dataset_size)
        msg = SiteReady(eval_samples=eval_size).message()
        await self.channels[self.topology.upstream].send(self.upstream_peer, msg)

    async def on_failure(self, exc: FlameError) -> None:
        await self.notify_abort(self.topology.upstream, exc)

    @tasklet
    async def submit_local(self) -> None:
        assert self.topology.upstream is not None and self.upstream_peer is not None
        weights = self.local_weights or self.weights
        msg = LocalModel(round=self.round, weights=weights).message()
        await self.channels[self.topology.upstream].send(self.upstream_peer, msg)

    @tasklet
    async def evaluate_model(self) -> None:
        assert self.topology.upstream is not None and self.upstream_peer is not None
        up = self.topology.upstream
        req = EvalRequest.expect(await self.recv_from(up, self.upstream_peer, "model to score"))
        try:
            check_update(req.weights or {}, self.weights, self.upstream_peer)
        except RejectedUpdate as exc:
            raise FlameError(f"model {req.model!r}: {exc.reason}") from None
        self.load_weights(req.weights or {})
        metrics = await self.call_user(self.evaluate)
        eval_size = float(self.eval_size if self.eval_size is not None else self.dataset_size)
        answer = EvalResult(
            round=req.round,
            model=req.model,
            metrics={k: float(v) for k, v in metrics.items()},
            eval_samples=eval_size,
        )
        await self.channels[up].send(self.upstream_peer, answer.message())
        self.evaluated = req.last


class CrossSiteEvaluator(Aggregator):
    """The aggregator of a cross-site evaluation: trains, gathers, deals and scores models."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _central(self)
        self.labels = site_labels(self.config)
        self.models: dict[str, Weights] = {}
        self.matrix: dict[str, dict[str, dict[str, float]]] = {}
        self.report: dict[str, Any] = {}

    def compose(self) -> Composable:
        return (
            self.init
            >> self.roll_call
            >> Loop(until=self.done)(
                self.fetch
                >> self.distribute
                >> self.collect
                >> self.every_site
                >> self.aggregate
                >> self.upload
            )
            >> self.gather_local
            >> self.cross_evaluate
            >> self.publish
            >> self.finish
        )

    def label(self, task_id: str) -> str:
        return self.labels.get(task_id, task_id)

    @tasklet
    async def roll_call(self) -> None:
        """Wait for every site's ``ready``; a site that gave up fails the job, with its reason,
        before anyone trains."""
        assert self.topology.downstream is not None
        for site in self.candidates:
            try:
                SiteReady.read(await self.recv_from(self.topology.downstream, site, "ready"))
            except RejectedUpdate as exc:
                raise FlameError(f"site {self.label(site)}: {exc.reason}") from None
            except FlameError as exc:  # the site gave up (its reason) or never answered
                raise FlameError(f"site {self.label(site)}: {exc}") from None

    @tasklet
    def every_site(self) -> None:
        """Every site's model is a row and its data a column: none may be missing."""
        if self.aborts:
            site, reason = min(self.aborts.items())
            raise FlameError(f"site {self.label(site)}: {reason}")
        if self.silent:
            lost = ", ".join(sorted(self.label(s) for s in self.silent))
            raise FlameError(f"round {self.round}: no answer from {lost}")

    @tasklet
    async def gather_local(self) -> None:
        assert self.topology.downstream is not None
        self.models = {GLOBAL: dict(self.global_weights)}
        for site in self.candidates:
            msg = await self.recv_from(self.topology.downstream, site, "local model")
            try:
                local = LocalModel.read(msg)
                check_update(local.weights or {}, self.global_weights, site)
            except RejectedUpdate as exc:
                raise FlameError(f"the local model of {self.label(site)}: {exc.reason}") from None
            self.models[self.label(site)] = dict(local.weights or {})

    @tasklet
    async def cross_evaluate(self) -> None:
        down = self.topology.downstream
        assert down is not None
        names = [GLOBAL, *sorted(m for m in self.models if m != GLOBAL)]
        for i, name in enumerate(names):
            req = EvalRequest(
                round=self.round,
                model=name,
                last=i == len(names) - 1,
                weights=self.models[name],
            )
            reached = await self.send_all(down, self.candidates, req.message())
            if len(reached) != len(self.candidates):
                raise FlameError(
                    f"model {name!r} reached {len(reached)} of {len(self.candidates)} sites"
                )
        self.matrix = {name: {} for name in names}
        for site in self.candidates:
            for name in names:
                got = EvalResult.expect(await self.recv_from(down, site, f"score of {name!r}"))
                if got.model != name:
                    raise FlameError(f"{self.label(site)} scored {got.model!r}, expected {name!r}")
                self.matrix[name][self.label(site)] = got.metrics

    @tasklet
    def publish(self) -> None:
        sites = sorted(self.label(s) for s in self.candidates)
        step = self.config.job.rounds
        metrics = {
            f"xsite/{model}/{site}/{key}": value
            for model, row in self.matrix.items()
            for site, cell in row.items()
            for key, value in cell.items()
        }
        self.report = {
            "models": list(self.matrix),
            "sites": sites,
            "metric": self.config.job.tracking.selection_metric,
            "matrix": self.matrix,
        }
        self.tracker.log_round(step, metrics)
        self.tracker.log_json("cross_site.json", self.report)
        self.log.info("cross_site.published", models=len(self.matrix), sites=len(sites))

    def result(self) -> RoleResult:
        res = super().result()
        return RoleResult(**{**res.__dict__, "report": self.report})
