"""The controller's store: one async interface (:class:`Store`), backends chosen by URI."""

from __future__ import annotations

from flame_controller.store.base import LogRetention, Page, Store
from flame_controller.store.factory import open_store
from flame_controller.store.records import (
    JOB_TERMINAL_STATES,
    TASK_TERMINAL_STATES,
    CodeRecord,
    DatasetRecord,
    DesignRecord,
    JobRecord,
    LogLineRecord,
    MetricRecord,
    NodeHealthRecord,
    NodeRecord,
    ProjectRecord,
    TaskRecord,
    TokenRecord,
    TransitionRecord,
    UserRecord,
    new_id,
    utcnow,
)

__all__ = [
    "JOB_TERMINAL_STATES",
    "TASK_TERMINAL_STATES",
    "CodeRecord",
    "DatasetRecord",
    "DesignRecord",
    "JobRecord",
    "LogLineRecord",
    "LogRetention",
    "MetricRecord",
    "NodeHealthRecord",
    "NodeRecord",
    "Page",
    "ProjectRecord",
    "Store",
    "TaskRecord",
    "TokenRecord",
    "TransitionRecord",
    "UserRecord",
    "new_id",
    "open_store",
    "utcnow",
]
