"""The sync run, as the rest of Crosslink imports it: one task carried to its counterpart.

A package because the run is several jobs at once (a request gateway, the orchestration of
fields and statuses, comment, checklist and file mirroring, agreeing on what both sides hold),
each in a module of its own. This module only names what other code imports from workers.sync,
so that those importers (workers.tasks, workers.runtime, crosslink.operations.backfill, tests) need no
change when the package's inside does.

The names are bound here once, at import: the limit waits are read where requests are made, in
workers.sync.gateway, so a test that changes one must change it there.
"""

from workers.sync.comments import COMMENT_FIELDS
from workers.sync.gateway import ADMISSION_LIMIT_WAIT_S, FOLLOW_UP_LIMIT_WAIT_S, SideFailure, call_key
from workers.sync.notices import post_note
from workers.sync.run import TaskSync
from workers.sync.views import expected_view, people_names

__all__ = [
    "ADMISSION_LIMIT_WAIT_S",
    "COMMENT_FIELDS",
    "FOLLOW_UP_LIMIT_WAIT_S",
    "SideFailure",
    "TaskSync",
    "call_key",
    "expected_view",
    "people_names",
    "post_note",
]
