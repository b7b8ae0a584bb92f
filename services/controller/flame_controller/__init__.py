"""Flame controller: the single writer of control-plane state.

Layout: ``domain/`` (plain async rules per resource, no transport), ``servicer.py`` (the thin
``ControlPlane`` gRPC layer over it, ``convert.py`` for proto <-> records), ``store/`` (the
``Store`` interface and its SQLite / MongoDB backends), ``jobs/`` (design validation, job
builder, state machines, reconciler), ``deployers/`` (local processes), ``server.py``
(``serve(settings) -> RunningController``), ``bootstrap.py`` (first admin), ``__main__.py``
(the ``flame-controller`` command).
"""
