"""Vertical federated learning: parties hold different columns of the same samples.

A job of kind ``vertical`` has feature parties (:class:`FeatureParty`: a bottom model over
their own columns) and one label party (:class:`LabelParty`: the labels, the top model and the
loss), joined by one channel. Both run

    init >> intersect >> Loop(until=done)(begin_round >> evaluate_pass >> train_pass) >> finish

* ``init``: ``load_data`` (``self.ids`` and ``self.x`` or ``self.y``), checks before anything is
  sent (ids present, unique, at least ``min_samples``; the column count equals the width the job
  declares for this dataset in ``hyperparameters.feature_widths``), then ``initialize`` builds
  ``self.model`` and a feature party's model is tried on one row.
* ``intersect``: private set intersection (:mod:`flame.roles.intersection`); every party ends
  with the same sorted ids, so its rows align with everyone's. A seeded cut of the
  intersection (``test_fraction``, the job's seed) is the test split.
* each round ``r``: the test split is scored (metrics of the model after ``r - 1`` rounds, step
  ``r - 1``), then one pass over the training split in a seeded batch order shared by every
  party: feature parties send embeddings, the label party computes the loss and sends each
  party the gradient of its embedding, every party steps its optimizer. The last round
  (``rounds + 1``) only scores.

The defaults of :meth:`FeatureParty.forward` / :meth:`FeatureParty.backward` and
:meth:`LabelParty.top_step` train torch modules with SGD (``lr``); override them for other
models (:mod:`flame.roles.vertical_logistic` is a NumPy vertical logistic regression).
In the design, list the feature-party role before the label party: tasks are ranked from the
first data-consumer role, and the label party must be the job's top (it tracks the job).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from flame.composer import Composable, Loop, tasklet
from flame.errors import ConfigError, FlameError, RejectedUpdate
from flame.protocol import Embedding, Gradient
from flame.roles.base import RoleResult
from flame.roles.intersection import intersect_as_hub, intersect_as_spoke
from flame.roles.sites import party_order
from flame.roles.vertical_party import (
    TopStep,
    VerticalParty,
    batch_order,
    f32,
    split_rows,
    torch_module,
)
from flame.tracking import tracking_tags

__all__ = ["FeatureParty", "LabelParty", "TopStep", "VerticalParty", "batch_order", "split_rows"]


class FeatureParty(VerticalParty):
    """Subclass it: ``load_data`` sets ``self.ids`` and ``self.x`` (rows aligned with the
    ids), ``initialize`` builds the bottom model ``self.model`` (``self.width`` is the column
    count). The default ``forward``/``backward`` train a torch module with SGD (``lr``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.topology.upstream is None:
            raise ConfigError(
                f"feature party {self.config.task_id} has no channel to a label party "
                "(list the feature-party role before the label party in the design)"
            )
        self.channel = self.topology.upstream
        (self.hub,) = self.config.peers(self.channel)
        self.x: np.ndarray = np.zeros((0, 0), dtype=np.float32)
        self.width = 0
        self.optimizer: Any = None
        self._out: Any = None

    def compose(self) -> Composable:
        return (
            self.init
            >> self.intersect
            >> Loop(until=self.done)(self.begin_round >> self.evaluate_pass >> self.train_pass)
            >> self.finish
        )

    def declared_width(self) -> int | None:
        widths = self.config.job.hyperparameters.get("feature_widths")
        if widths is None:
            return None
        ds = self.config.dataset
        assert ds is not None
        width = widths.get(ds.name, widths.get(ds.id)) if isinstance(widths, dict) else None
        if not isinstance(width, int) or isinstance(width, bool) or width < 1:
            raise ConfigError(
                f"hyperparameters.feature_widths declares no width for dataset {ds.name!r}"
            )
        return width

    @tasklet
    async def init(self) -> None:
        await self.call_user(self.load_data)
        x = np.asarray(self.x)
        if x.ndim != 2:
            raise ConfigError(f"dataset {self.dataset_label!r}: features must be a 2-D table")
        self.check_ids(x.shape[0])
        declared = self.declared_width()
        if declared is not None and declared != x.shape[1]:
            raise ConfigError(
                f"dataset {self.dataset_label!r} has {x.shape[1]} feature columns but the job "
                f"declares {declared} (hyperparameters.feature_widths)"
            )
        if not np.all(np.isfinite(x)):
            raise ConfigError(f"dataset {self.dataset_label!r} has non-finite feature values")
        self.x = x.astype(np.float32, copy=False)
        self.width = x.shape[1]
        await self.call_user(self.initialize)
        try:
            probe = np.asarray(self.forward(self.x[:1], False))
        except Exception as exc:
            raise ConfigError(
                f"the bottom model of {self.dataset_label!r} does not take rows of "
                f"{self.width} features: {type(exc).__name__}: {exc}"
            ) from exc
        if probe.ndim != 2 or probe.shape[0] != 1:
            raise ConfigError(f"the bottom model must return one row per sample, not {probe.shape}")

    @tasklet
    async def intersect(self) -> None:
        self.align(await intersect_as_spoke(self, self.channel, self.hub, self._canonical))

    @tasklet
    async def evaluate_pass(self) -> None:
        chan = self.channels[self.channel]
        for step, rows in enumerate(self.batches(self.test_rows, shuffle=False)):
            emb = await self.call_user(partial(self.forward, self.x[rows], False))
            msg = Embedding(
                round=self.round, step=step, phase="eval", weights={"embedding": f32(emb)}
            )
            await chan.send(self.hub, msg.message())

    @tasklet
    async def train_pass(self) -> None:
        if self.final:
            self.finished = True
            return
        chan = self.channels[self.channel]
        for step, rows in enumerate(self.batches(self.train_rows, shuffle=True)):
            emb = f32(await self.call_user(partial(self.forward, self.x[rows], True)))
            msg = Embedding(round=self.round, step=step, phase="train", weights={"embedding": emb})
            await chan.send(self.hub, msg.message())
            grad = Gradient.expect(await self.recv_from(self.channel, self.hub, "gradient"))
            g = (grad.weights or {}).get("gradient")
            if grad.round != self.round or grad.step != step or g is None:
                raise FlameError(
                    f"gradient for round {grad.round} step {grad.step}, expected "
                    f"round {self.round} step {step}"
                )
            if g.shape != emb.shape or g.dtype != np.float32 or not np.all(np.isfinite(g)):
                raise FlameError(f"malformed gradient from {self.hub}: {g.dtype}{list(g.shape)}")
            await self.call_user(partial(self.backward, g))

    @tasklet
    def finish(self) -> None:
        self.log.info("feature_party.finished", rounds=self.round - 1)

    async def on_failure(self, exc: FlameError) -> None:
        await self.notify_abort(self.channel, exc)

    # -- model hooks (torch defaults) -----------------------------------------------------------
    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        """The bottom model's output for rows ``x``; with ``train`` keep what ``backward``
        needs."""
        import torch

        model = torch_module(self.model, "forward/backward")
        model.train(train)
        inp = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        if not train:
            with torch.no_grad():
                return model(inp).numpy()
        self._out = model(inp)
        return self._out.detach().numpy()

    def backward(self, gradient: np.ndarray) -> None:
        """Step the bottom model with the gradient of the loss w.r.t. the last ``forward``."""
        import torch

        if self.optimizer is None:
            lr = float(self.hyperparameters.get("lr", 0.1))
            self.optimizer = torch.optim.SGD(self.model.parameters(), lr=lr)
        self.optimizer.zero_grad()
        self._out.backward(torch.from_numpy(gradient))
        self.optimizer.step()


class LabelParty(VerticalParty):
    """Subclass it: ``load_data`` sets ``self.ids`` and ``self.y`` (integer labels),
    ``initialize`` builds the top model ``self.model`` over the feature parties' embeddings
    concatenated in party order. The default ``top_step`` trains a torch module with
    cross-entropy and SGD (``lr``). Metrics of the test split go to the job's tracker."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.topology.is_top or self.topology.downstream is None:
            raise ConfigError(
                f"label party {self.config.task_id} must be the top of the design: list the "
                "feature-party role(s) before it"
            )
        self.channel = self.topology.downstream
        self.parties = party_order(self.config, self.config.peers(self.channel))
        self.y: np.ndarray = np.zeros(0, dtype=np.int64)
        self.optimizer: Any = None
        self.metrics: dict[str, float] = {}
        self._train_loss: list[tuple[float, int]] = []

    def compose(self) -> Composable:
        return (
            self.init
            >> self.intersect
            >> Loop(until=self.done)(self.begin_round >> self.evaluate_pass >> self.train_pass)
            >> self.finish
        )

    @tasklet
    async def init(self) -> None:
        await self.call_user(self.load_data)
        y = np.asarray(self.y)
        if y.ndim != 1 or y.dtype.kind not in "iu":
            raise ConfigError(f"dataset {self.dataset_label!r}: labels must be a 1-D integer array")
        self.check_ids(len(y))
        self.y = y.astype(np.int64)
        await self.call_user(self.initialize)
        job = self.config.job
        self.tracker.start(
            {
                "kind": job.kind,
                "rounds": job.rounds,
                "seed": job.seed,
                "hyperparameters": job.hyperparameters,
                "parties": len(self.parties),
            },
            tracking_tags(self.config),
        )

    @tasklet
    async def intersect(self) -> None:
        self.align(await intersect_as_hub(self, self.channel, self.parties, self._canonical))

    async def _embeddings(self, step: int, phase: str, n: int) -> list[np.ndarray]:
        out = []
        for party in self.parties:
            msg = Embedding.expect(await self.recv_from(self.channel, party, "embedding"))
            emb = (msg.weights or {}).get("embedding")
            if msg.round != self.round or msg.step != step or msg.phase != phase:
                raise FlameError(
                    f"{party} sent {msg.phase} step {msg.step} of round {msg.round}, expected "
                    f"{phase} step {step} of round {self.round}"
                )
            try:
                if emb is None or emb.ndim != 2 or emb.shape[0] != n or emb.dtype != np.float32:
                    raise RejectedUpdate("embedding is not a float32 (batch, width) array", party)
                if not np.all(np.isfinite(emb)):
                    raise RejectedUpdate("embedding has non-finite values", party)
            except RejectedUpdate as exc:
                raise FlameError(str(exc)) from None
            out.append(emb)
        return out

    @tasklet
    async def evaluate_pass(self) -> None:
        loss_sum, correct, n = 0.0, 0, 0
        for step, rows in enumerate(self.batches(self.test_rows, shuffle=False)):
            embs = await self._embeddings(step, "eval", len(rows))
            out = await self.call_user(partial(self.top_step, embs, self.y[rows], False))
            loss_sum += out.loss * len(rows)
            correct += int((np.asarray(out.predictions) == self.y[rows]).sum())
            n += len(rows)
        step_no = self.round - 1
        metrics = {"accuracy": correct / n, "loss": loss_sum / n} if n else {}
        if self._train_loss:
            total = sum(c for _, c in self._train_loss)
            metrics["train_loss"] = sum(v * c for v, c in self._train_loss) / total
        self.metrics = metrics
        self.history.append({"round": step_no, **metrics})
        self.tracker.log_round(step_no, metrics)
        self.log.info("round.finished", round=self.round, step=step_no, metrics=metrics)

    @tasklet
    async def train_pass(self) -> None:
        self._train_loss = []
        if self.final:
            self.finished = True
            return
        chan = self.channels[self.channel]
        for step, rows in enumerate(self.batches(self.train_rows, shuffle=True)):
            embs = await self._embeddings(step, "train", len(rows))
            out = await self.call_user(partial(self.top_step, embs, self.y[rows], True))
            if out.gradients is None or len(out.gradients) != len(self.parties):
                raise FlameError("top_step must return one gradient per feature party")
            self._train_loss.append((out.loss, len(rows)))
            for party, grad in zip(self.parties, out.gradients, strict=True):
                msg = Gradient(
                    round=self.round, step=step, loss=out.loss, weights={"gradient": f32(grad)}
                )
                await chan.send(party, msg.message())

    @tasklet
    def finish(self) -> None:
        self.tracking_result = self.tracker.finish("FINISHED")
        self.log.info("label_party.finished", rounds=self.round - 1, metrics=self.metrics)

    async def on_failure(self, exc: FlameError) -> None:
        await self.notify_abort(self.channel, exc)
        self.tracker.finish("FAILED")

    def result(self) -> RoleResult:
        res = super().result()
        report = {
            "intersection": len(self.intersection),
            "train": len(self.train_rows),
            "test": len(self.test_rows),
            "parties": len(self.parties) + 1,
        }
        return RoleResult(**{**res.__dict__, "report": report})

    # -- model hook (torch default) -------------------------------------------------------------
    def top_step(self, embeddings: list[np.ndarray], labels: np.ndarray, train: bool) -> TopStep:
        """Loss and predictions of the top model on one batch; when training, also step it and
        return the gradient of the loss with respect to each party's embedding."""
        import torch
        from torch.nn import functional

        model = torch_module(self.model, "top_step")
        model.train(train)
        parts = [torch.from_numpy(e).requires_grad_(train) for e in embeddings]
        target = torch.from_numpy(labels)
        if not train:
            with torch.no_grad():
                logits = model(torch.cat(parts, 1))
                loss = functional.cross_entropy(logits, target)
            return TopStep(float(loss), logits.argmax(1).numpy())
        if self.optimizer is None:
            lr = float(self.hyperparameters.get("lr", 0.1))
            self.optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        self.optimizer.zero_grad()
        logits = model(torch.cat(parts, 1))
        loss = functional.cross_entropy(logits, target)
        loss.backward()
        self.optimizer.step()
        grads = [p.grad.numpy() for p in parts]  # type: ignore[union-attr]
        return TopStep(float(loss.detach()), logits.detach().argmax(1).numpy(), grads)
