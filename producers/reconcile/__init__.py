"""The reconciliation poller: ask Planfix what changed since we last looked, and queue a sync for
each task, so a change whose webhook never came (a scenario switched off, Planfix's retries given
up, our receiver down) is still synced within a bounded time (``repair_bound_s``).

Its parts, one concern a module, each module's docstring saying why it works as it does:
- ``accounts``: which link sides one poll covers, and which of them a task of the feed concerns;
- ``window``: the window a poll reads, a little before the cursor, in Planfix's minutes;
- ``stamps``: a task's change stamp, and when it counts as final;
- ``verdicts``: what each link side's run is queued for, and the "seen" record (pure);
- ``records``: every Redis key the poller keeps, and the records one poll leaves the next;
- ``poll``: one poll of one account (``poll_account``), step by step;
- ``audit``: the comment audit, for edits and deletions no feed dates;
- ``budget``: the period between polls, the repair bound, and the audit's allowance;
- ``turns``: which beat tick polls an account, and when it yields to live traffic.
producers.tasks runs them: a beat tick takes an account's turn, a poll reads it, an audit follows.
"""

from __future__ import annotations

from producers.reconcile.accounts import (
    PollAccount,
    find_poll_account,
    poll_account_of,
    poll_accounts,
    poll_filter_sets,
    task_routes,
)
from producers.reconcile.audit import AUDIT_COMMENT_FIELDS, audit_comments, audit_round, edited_comments
from producers.reconcile.budget import (
    AUDIT_MAX_TASKS,
    DAY_S,
    FIXED_REQUESTS_PER_DAY,
    RUN_REQUESTS,
    Budget,
    account_budget,
    audit_allowance,
    effective_period_s,
    poll_period_s,
    quiet_requests_per_day,
    repair_bound_s,
    take_audit_allowance,
)
from producers.reconcile.poll import poll_account
from producers.reconcile.records import (
    AUDIT_CREDIT_KEY,
    CURSOR_KEY,
    LAST_POLL_KEY,
    LAST_POLL_TTL_S,
    SEEN_KEY,
    TIMEZONE_KEY,
    TURN_KEY,
    LastPoll,
    key,
    load_seen,
    read_cursor,
    read_last_poll,
)
from producers.reconcile.stamps import STAMP_SETTLE_S, Stamp, task_stamp
from producers.reconcile.turns import MAX_DEFER_PERIODS, POLL_LANE, defer_poll, live_requests, take_turn
from producers.reconcile.verdicts import (
    CHECKLIST,
    COMMENT,
    ECHO,
    FULL,
    POLL_TASK_HINTS,
    REQUEUE_LIMIT,
    SKIP,
    TASK,
    FeedComment,
    Seen,
    Verdict,
    classify,
    comment_hints,
    hints_for,
    named_comments,
    next_seen,
    parse_seen,
    seen_record,
    settled,
)
from producers.reconcile.window import FIRST_LOOKBACK_S, OVERLAP_S, planfix_minute, window_start

# Every name code outside the package reads from producers.reconcile (crosslink, producers.tasks,
# the tests): re-exported, so no importer depends on which module a name lives in.
__all__ = [
    "AUDIT_COMMENT_FIELDS", "AUDIT_CREDIT_KEY", "AUDIT_MAX_TASKS", "Budget", "CHECKLIST", "COMMENT",
    "CURSOR_KEY", "DAY_S", "ECHO", "FIRST_LOOKBACK_S", "FIXED_REQUESTS_PER_DAY", "FULL", "FeedComment",
    "LAST_POLL_KEY", "LAST_POLL_TTL_S", "LastPoll", "MAX_DEFER_PERIODS", "OVERLAP_S", "POLL_LANE",
    "POLL_TASK_HINTS", "PollAccount", "REQUEUE_LIMIT", "RUN_REQUESTS", "SEEN_KEY", "SKIP", "STAMP_SETTLE_S",
    "Seen", "Stamp", "TASK", "TIMEZONE_KEY", "TURN_KEY", "Verdict", "account_budget", "audit_allowance",
    "audit_comments", "audit_round", "classify", "comment_hints", "defer_poll", "edited_comments",
    "effective_period_s", "find_poll_account", "hints_for", "key", "live_requests", "load_seen",
    "named_comments", "next_seen", "parse_seen", "planfix_minute", "poll_account", "poll_account_of",
    "poll_accounts", "poll_filter_sets", "poll_period_s", "quiet_requests_per_day", "read_cursor",
    "read_last_poll", "repair_bound_s", "seen_record", "settled", "take_audit_allowance", "take_turn",
    "task_routes", "task_stamp", "window_start",
]
