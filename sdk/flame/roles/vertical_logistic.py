"""Vertical logistic regression: the lighter algorithm of a vertical job (NumPy only).

Multinomial logistic regression split by columns: feature party ``j`` holds the weights
``w_j`` of its own columns and sends the partial logits ``x_j w_j`` of a batch; the label party
adds them up with its bias, takes the softmax cross-entropy and sends back ``(p - onehot) / b``,
the gradient of the mean loss with respect to every party's partial logits; each party steps
``w_j -= lr * x_j^T g``. That is exactly minibatch gradient descent on the centralized model
over all columns, so the two agree up to floating-point rounding. ``hyperparameters.classes``
(default 10) is the number of classes, ``lr`` the step size; weights start at zero.

Subclass :class:`LogisticFeatureParty` / :class:`LogisticLabelParty` and write only
``load_data``.
"""

from __future__ import annotations

import numpy as np

from flame.roles.vertical import FeatureParty, LabelParty, TopStep


def _classes(party: FeatureParty | LabelParty) -> int:
    return int(party.hyperparameters.get("classes", 10))


class LogisticFeatureParty(FeatureParty):
    def initialize(self) -> None:
        self.model = {"w": np.zeros((self.width, _classes(self)), dtype=np.float64)}
        self._x: np.ndarray | None = None

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        if train:
            self._x = x.astype(np.float64)
        return (x.astype(np.float64) @ self.model["w"]).astype(np.float32)

    def backward(self, gradient: np.ndarray) -> None:
        assert self._x is not None
        lr = float(self.hyperparameters.get("lr", 0.1))
        self.model["w"] -= lr * self._x.T @ gradient.astype(np.float64)


class LogisticLabelParty(LabelParty):
    def initialize(self) -> None:
        self.model = {"b": np.zeros(_classes(self), dtype=np.float64)}

    def top_step(self, embeddings: list[np.ndarray], labels: np.ndarray, train: bool) -> TopStep:
        z = sum(e.astype(np.float64) for e in embeddings) + self.model["b"]
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        n = len(labels)
        loss = float(-np.log(np.maximum(p[np.arange(n), labels], 1e-300)).mean())
        predictions = p.argmax(axis=1)
        if not train:
            return TopStep(loss, predictions)
        grad = p
        grad[np.arange(n), labels] -= 1.0
        grad /= n
        lr = float(self.hyperparameters.get("lr", 0.1))
        self.model["b"] -= lr * grad.sum(axis=0)
        g32 = grad.astype(np.float32)
        return TopStep(loss, predictions, [g32] * len(embeddings))
