"""The private set intersection exchange of a vertical job (star: the label party is the hub).

Every party blinds its own ids (:mod:`flame.psi`) with its own secret key and shuffles them
before anything leaves it. With ``L`` the hub and ``F`` each feature party (a spoke):

1. ``F -> L``: ``x(kF * H(f))`` for F's ids, shuffled (:class:`~flame.protocol.PsiBlinded`);
   ``L -> F``: ``x(kL * H(l))`` for L's ids, shuffled.
2. ``F -> L``: L's values blinded again with ``kF``, in L's order (:class:`PsiReblinded`);
   L blinds F's values again with ``kL``. L now holds ``x(kF kL H(id))`` for both sets: for its
   own ids in an order it knows, for F's in F's shuffled order, which it cannot undo.
3. L keeps its ids whose doubly-blinded value every spoke also holds: the intersection of all
   parties. To each spoke it sends the *positions* (in the spoke's own shuffled order) of the
   spoke's values that are in that intersection (:class:`PsiResult`); the spoke maps them back
   to its ids.

No id travels in clear, nor its unblinded hash. A feature party learns the number of the
label party's ids and the intersection of all parties, nothing about ids outside it. The label
party learns the number of each party's ids and, as in other hub-based multi-party PSI
protocols, which of its own ids each feature party holds (pairwise membership of its own ids);
it learns nothing about a feature party's ids outside its own set. Every party ends with the
intersection sorted by canonical id, so rows align without further messages.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from functools import partial

import numpy as np

from flame.errors import FlameError, RejectedUpdate
from flame.protocol import PsiBlinded, PsiReblinded, PsiResult
from flame.psi import BlindingKey, check_points, rows
from flame.roles.base import Role


def _shuffled(ids: Sequence[bytes]) -> list[bytes]:
    out = list(ids)
    secrets.SystemRandom().shuffle(out)
    return out


def _points(msg: PsiBlinded | PsiReblinded, sender: str) -> np.ndarray:
    points = (msg.weights or {}).get("points")
    if points is None:
        raise RejectedUpdate(f"{msg.KIND!r} carries no points", sender)
    check_points(points, sender)
    return points


async def intersect_as_hub(
    role: Role, channel: str, spokes: Sequence[str], ids: Sequence[bytes]
) -> list[bytes]:
    """The label party's side: returns the sorted intersection of every party's ids."""
    key = BlindingKey()
    order = _shuffled(ids)
    mine = await role.call_user(lambda: key.blind_ids(order))
    msg = PsiBlinded(weights={"points": mine}).message()
    reached = await role.send_all(channel, list(spokes), msg)
    if len(reached) != len(spokes):
        lost = ", ".join(sorted(set(spokes) - set(reached)))
        raise FlameError(f"private set intersection: cannot reach {lost}")
    theirs: dict[str, list[bytes]] = {}  # spoke -> its values blinded by both, its order
    back: dict[str, list[bytes]] = {}  # spoke -> my values blinded by both, my order
    for spoke in spokes:
        blinded = PsiBlinded.expect(await role.recv_from(channel, spoke, "blinded ids"))
        points = _points(blinded, spoke)
        again = await role.call_user(partial(key.reblind, points, spoke))
        theirs[spoke] = rows(again)
        reblinded = PsiReblinded.expect(await role.recv_from(channel, spoke, "re-blinded ids"))
        returned = _points(reblinded, spoke)
        if returned.shape != mine.shape:
            raise RejectedUpdate(
                f"returned {returned.shape[0]} values for the {mine.shape[0]} sent", spoke
            )
        back[spoke] = rows(returned)
    held = {s: set(theirs[s]) for s in spokes}
    common = [i for i in range(len(order)) if all(back[s][i] in held[s] for s in spokes)]
    if not common:
        raise FlameError("private set intersection: the parties have no sample id in common")
    for spoke in spokes:
        keep = {back[spoke][i] for i in common}
        positions = np.array([p for p, v in enumerate(theirs[spoke]) if v in keep], np.int64)
        await role.channels[channel].send(
            spoke, PsiResult(weights={"positions": positions}).message()
        )
    return sorted(order[i] for i in common)


async def intersect_as_spoke(
    role: Role, channel: str, hub: str, ids: Sequence[bytes]
) -> list[bytes]:
    """A feature party's side: returns the sorted intersection of every party's ids."""
    key = BlindingKey()
    order = _shuffled(ids)
    mine = await role.call_user(lambda: key.blind_ids(order))
    await role.channels[channel].send(hub, PsiBlinded(weights={"points": mine}).message())
    blinded = PsiBlinded.expect(await role.recv_from(channel, hub, "blinded ids"))
    points = _points(blinded, hub)
    again = await role.call_user(lambda: key.reblind(points, hub))
    await role.channels[channel].send(hub, PsiReblinded(weights={"points": again}).message())
    result = PsiResult.expect(await role.recv_from(channel, hub, "intersection"))
    positions = (result.weights or {}).get("positions")
    if (
        positions is None
        or positions.dtype != np.int64
        or positions.ndim != 1
        or len(np.unique(positions)) != len(positions)
        or (len(positions) and (positions.min() < 0 or positions.max() >= len(order)))
    ):
        raise FlameError(f"private set intersection: malformed result from {hub}")
    if len(positions) == 0:
        raise FlameError("private set intersection: the parties have no sample id in common")
    return sorted(order[int(p)] for p in positions)
