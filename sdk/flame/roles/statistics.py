"""Federated statistics: a job of kind ``statistics`` (sites + one statistics server).

    site:   init >> Loop(until=done)(answer) >> finish
    server: init >> Loop(until=done)(request >> collect >> combine) >> finish

The server walks two phases: ``moments`` (count, sum, squared deviations, min, max per feature)
and ``histogram`` (counts over bin edges it fixes from the job's ``range`` or the global min and
max; plus a finer histogram for quantiles), then sends ``done``. The combination rules and the
precision of quantiles are :mod:`flame.statistics`'s. Hyperparameters: ``bins`` (10),
``quantile_bins`` (1000), ``quantiles`` ([0.25, 0.5, 0.75]), ``range`` ([lo, hi], optional),
``min_count`` (10).

A site with fewer rows than ``min_count`` answers ``suppressed`` and sends no values; a
published histogram bin with fewer than ``min_count`` values is withheld. The job fails before
any statistic is computed when fewer than ``min_trainers`` sites contribute, and when the sites
disagree on the features.

The server's result (``report``) holds every statistic per feature; its tracker logs them as
metrics ``stats/<feature>/<name>`` (step 0) and the whole report as ``statistics.json``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from flame.composer import Composable, Loop, tasklet
from flame.errors import ConfigError, FlameError, PeerTimeout, QuorumLost
from flame.protocol import Abort, StatsReport, StatsRequest
from flame.roles.base import Role, RoleResult
from flame.roles.sites import site_labels
from flame.statistics import (
    Moments,
    bin_edges,
    combine,
    histograms,
    local_moments,
    quantile_from_histogram,
    suppress,
)
from flame.tracking import tracking_tags

DEFAULTS: dict[str, Any] = {
    "bins": 10,
    "quantile_bins": 1000,
    "quantiles": [0.25, 0.5, 0.75],
    "min_count": 10,
}


def _params(role: Role) -> dict[str, Any]:
    hp = role.config.job.hyperparameters
    return {**DEFAULTS, **{k: hp[k] for k in (*DEFAULTS, "range") if k in hp}}


class StatisticsSite(Role):
    """Subclass it: ``load_data`` sets ``self.table`` (a ``(rows, features)`` array, NaN for
    missing values) and optionally ``self.feature_names``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.topology.upstream is None:
            raise ConfigError(f"statistics site {self.config.task_id} has no server channel")
        self.channel = self.topology.upstream
        (self.server,) = self.config.peers(self.channel)
        self.table: np.ndarray = np.zeros((0, 0))
        self.feature_names: list[str] = []
        self.params = _params(self)

    def compose(self) -> Composable:
        return self.init >> Loop(until=self.done)(self.answer) >> self.finish

    @tasklet
    async def init(self) -> None:
        await self.call_user(self.load_data)
        table = np.asarray(self.table, dtype=np.float64)
        if table.ndim != 2:
            raise ConfigError("a statistics site's table must be 2-D (rows, features)")
        if np.isinf(table).any():
            raise ConfigError("the table has infinite values (NaN marks a missing one)")
        self.table = table
        names = list(self.feature_names) or [f"f{i}" for i in range(table.shape[1])]
        if len(names) != table.shape[1] or len(set(names)) != len(names):
            raise ConfigError("feature_names must name every column once")
        self.feature_names = names

    @property
    def suppressed(self) -> bool:
        return self.table.shape[0] < int(self.params["min_count"])

    @tasklet
    async def answer(self) -> None:
        req = StatsRequest.expect(await self.recv_from(self.channel, self.server, "request"))
        if req.phase == "done":
            self.finished = True
            return
        report = StatsReport(
            round=req.round, phase=req.phase, features=self.feature_names, suppressed=True
        )
        if self.suppressed:
            self.log.info("statistics.suppressed", rows=self.table.shape[0])
        elif req.phase == "moments":
            moments = await self.call_user(lambda: local_moments(self.table))
            report = StatsReport(
                round=req.round,
                phase=req.phase,
                features=self.feature_names,
                weights=moments.tensors(),
            )
        else:
            edges = (req.weights or {}).get("edges")
            fine = (req.weights or {}).get("quantile_edges")
            if edges is None or fine is None or edges.shape[0] != self.table.shape[1]:
                raise FlameError(f"malformed histogram request from {self.server}")
            counts = await self.call_user(lambda: histograms(self.table, edges))
            fine_counts = await self.call_user(lambda: histograms(self.table, fine))
            report = StatsReport(
                round=req.round,
                phase=req.phase,
                features=self.feature_names,
                weights={"histogram": counts, "quantile_histogram": fine_counts},
            )
        await self.channels[self.channel].send(self.server, report.message())

    @tasklet
    def finish(self) -> None:
        self.log.info("statistics_site.finished")

    async def on_failure(self, exc: FlameError) -> None:
        await self.notify_abort(self.channel, exc)


class StatisticsServer(Role):
    """The top of a statistics job: asks, checks, combines, publishes. Nothing to override."""

    PHASES = ("moments", "histogram", "done")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.topology.downstream is None:
            raise ConfigError(f"statistics server {self.config.task_id} has no site channel")
        self.channel = self.topology.downstream
        self.sites = sorted(self.config.peers(self.channel))
        self.labels = site_labels(self.config)
        self.params = _params(self)
        self.phase_index = -1
        self.replies: dict[str, StatsReport] = {}
        self.features: list[str] = []
        self.contributors: list[str] = []
        self.total: Moments | None = None
        self.edges = np.zeros((0, 0))
        self.quantile_edges = np.zeros((0, 0))
        self.report: dict[str, Any] = {}

    def compose(self) -> Composable:
        return (
            self.init
            >> Loop(until=self.done)(self.request >> self.collect >> self.combine)
            >> self.finish
        )

    @property
    def phase(self) -> str:
        return self.PHASES[self.phase_index]

    @tasklet
    async def init(self) -> None:
        await self.call_user(self.initialize)
        self.tracker.start(
            {"kind": "statistics", "sites": len(self.sites), **self.params},
            tracking_tags(self.config),
        )

    @tasklet
    async def request(self) -> None:
        self.phase_index += 1
        self.round = self.phase_index + 1
        weights = None
        if self.phase == "histogram":
            weights = {"edges": self.edges, "quantile_edges": self.quantile_edges}
        msg = StatsRequest(round=self.round, phase=self.phase, weights=weights).message()
        await self.send_all(self.channel, self.sites, msg)
        if self.phase == "done":
            self.finished = True

    @tasklet
    async def collect(self) -> None:
        self.replies = {}
        if self.phase == "done":
            return
        chan = self.channels[self.channel]
        pending = set(self.sites)
        deadline = self.clock() + self.config.job.round_timeout
        while pending:
            remaining = deadline - self.clock()
            if remaining <= 0:
                break
            try:
                peer, msg = await chan.recv_any(sorted(pending), timeout=remaining)
            except PeerTimeout:
                break
            pending.discard(peer)
            if msg.kind == Abort.KIND:
                self.log.warning("site.aborted", peer=peer, reason=Abort.read(msg).reason)
                continue
            report = StatsReport.expect(msg)
            if report.round != self.round or report.phase != self.phase:
                raise FlameError(f"{peer} answered {report.phase!r} to {self.phase!r}")
            self.replies[peer] = report
        if pending:
            self.log.warning("statistics.no_answer", phase=self.phase, missing=sorted(pending))

    @tasklet
    def combine(self) -> None:
        if self.phase == "moments":
            self._combine_moments()
        elif self.phase == "histogram":
            self._combine_histograms()

    def _combine_moments(self) -> None:
        names = {tuple(r.features) for r in self.replies.values()}
        if len(names) > 1:
            raise FlameError(f"the sites disagree on the features: {sorted(names)}")
        # combined in the order of the sites' names, which are the same wherever the job runs
        # (task ids are not): the same floating-point result in a simulation and on the
        # control plane
        self.contributors = sorted(
            (p for p, r in self.replies.items() if not r.suppressed),
            key=lambda p: self.labels.get(p, p),
        )
        suppressed = sorted(self.labels.get(p, p) for p, r in self.replies.items() if r.suppressed)
        need = self.config.job.min_trainers
        if len(self.contributors) < need:
            raise QuorumLost(
                f"{len(self.contributors)} site(s) contributed, min_trainers is {need} "
                f"(suppressed under min_count={self.params['min_count']}: "
                f"{', '.join(suppressed) or 'none'}; silent: "
                f"{', '.join(sorted(set(self.sites) - set(self.replies))) or 'none'})"
            )
        self.features = list(next(iter(names)))
        parts = []
        for peer in self.contributors:
            try:
                parts.append(Moments.of(self.replies[peer].weights or {}, len(self.features)))
            except FlameError as exc:
                raise FlameError(f"{peer}: {exc}") from None
        self.total = combine(parts)
        rng = self.params.get("range")
        if rng is not None:
            lo = np.full(len(self.features), float(rng[0]))
            hi = np.full(len(self.features), float(rng[1]))
        else:
            lo, hi = self.total.min, self.total.max
        self.edges = bin_edges(lo, hi, int(self.params["bins"]))
        self.quantile_edges = bin_edges(lo, hi, int(self.params["quantile_bins"]))
        self.report = {
            "features": self.features,
            "sites": [self.labels.get(p, p) for p in self.contributors],
            "suppressed_sites": suppressed,
            "min_count": int(self.params["min_count"]),
        }

    def _combine_histograms(self) -> None:
        assert self.total is not None
        f, bins, fine = len(self.features), int(self.params["bins"]), self.quantile_edges.shape[1]
        counts = np.zeros((f, bins), dtype=np.int64)
        fine_counts = np.zeros((f, fine - 1), dtype=np.int64)
        for peer in self.contributors:
            reply = self.replies.get(peer)
            w = (reply.weights if reply is not None else None) or {}
            h, q = w.get("histogram"), w.get("quantile_histogram")
            if h is None or q is None or h.shape != counts.shape or q.shape != fine_counts.shape:
                raise FlameError(f"{peer} sent no or a malformed histogram")
            if h.dtype != np.int64 or q.dtype != np.int64 or (h < 0).any() or (q < 0).any():
                raise FlameError(f"{peer}: histogram counts must be non-negative int64")
            counts += h
            fine_counts += q
        min_count = int(self.params["min_count"])
        stats: dict[str, Any] = {}
        metrics: dict[str, float] = {}
        total = self.total
        for i, name in enumerate(self.features):
            quantiles = {
                str(q): quantile_from_histogram(fine_counts[i], self.quantile_edges[i], float(q))
                for q in self.params["quantiles"]
            }
            values = {
                "count": float(total.count[i]),
                "sum": float(total.sum[i]),
                "mean": float(total.mean[i]),
                "variance": float(total.variance[i]),
                "std": float(np.sqrt(total.variance[i])),
                "min": float(total.min[i]),
                "max": float(total.max[i]),
            }
            stats[name] = {
                **values,
                "quantiles": quantiles,
                "quantile_precision": float(self.quantile_edges[i][1] - self.quantile_edges[i][0]),
                "histogram": {
                    "edges": [float(e) for e in self.edges[i]],
                    "counts": suppress(counts[i], min_count),
                },
            }
            for key, value in {**values, **{f"q{q}": v for q, v in quantiles.items()}}.items():
                if np.isfinite(value):
                    metrics[f"stats/{name}/{key}"] = value
        self.report["statistics"] = stats
        self.history = [{"round": 0, **metrics}]
        self.tracker.log_round(0, metrics)
        self.tracker.log_json("statistics.json", self.report)
        self.log.info("statistics.published", features=len(self.features))

    @tasklet
    def finish(self) -> None:
        self.tracking_result = self.tracker.finish("FINISHED")

    async def on_failure(self, exc: FlameError) -> None:
        await self.notify_abort(self.channel, exc)
        self.tracker.finish("FAILED")

    def result(self) -> RoleResult:
        res = super().result()
        return RoleResult(**{**res.__dict__, "report": self.report})
