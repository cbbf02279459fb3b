"""What stands between a request and the world: rate limit, daily quota, faults, the request log.

Planfix allows an account about one request a second and a daily quota, and it answers 429 / 403
code 22 past them; the sync must keep under both, so the emulator enforces them the same way and
logs every request for the checks that prove it did. Faults (500s, 202s applied later or never,
slow answers, dropped connections, jitter) are drawn here per account from a seeded generator, so
a chaos run can be replayed; a change answered 202 waits here behind its task's lock.
"""

from __future__ import annotations

import math
import random
from typing import Any, Callable

from planfix.emulator.timepoints import DAY_S
from planfix.emulator.world.base import FAULT_DEFAULTS, ApiError, WorldCore

# The sliding window of the per-account rate limit.
RATE_WINDOW_S = 1.0


class LimitsMixin(WorldCore):
    """Admission (rate, quota), the request log, fault draws and the queue of 202-answered changes."""

    # -- rate limit, quota, request log -------------------------------------------------------

    def admit(self, account_name: str) -> tuple[ApiError | None, dict[str, str]]:
        """Count one request against the rate limit and the daily quota.

        Returns (error or None, headers to add). A request rejected for rate does not count as
        served and does not use quota [verify: Planfix's own answer to over-rate is undocumented].
        """
        with self.lock:
            account = self.account(account_name)
            now = self.clock()
            headers: dict[str, str] = {}
            if account.rate_per_s:
                while account.served and account.served[0] <= now - RATE_WINDOW_S:
                    account.served.popleft()
                if len(account.served) >= account.rate_per_s:
                    retry = max(1, math.ceil(account.served[0] + RATE_WINDOW_S - now))
                    return ApiError(429, 0, "Request rate limit exceeded"), {"Retry-After": str(retry)}
            day = int(now // DAY_S)
            if day != account.quota_day:
                account.quota_day, account.quota_used = day, 0
            time_to_reset = int((day + 1) * DAY_S - now)
            if account.faults.get("quota_exhausted") and account.faults.get("quota_reset_s") is not None:
                # A fault window shorter than a day: the chaos suite's code-22 pause ends within the run.
                time_to_reset = max(1, math.ceil(float(account.faults["quota_reset_s"])))
            if account.faults.get("quota_exhausted") or (
                    account.daily_quota and account.quota_used >= account.daily_quota):
                return ApiError(403, 22, "Daily REST API request limit exhausted",
                                timeToReset=time_to_reset), {"X-RateLimit-Remaining": "0"}
            if account.rate_per_s:
                account.served.append(now)
            account.quota_used += 1
            if account.daily_quota:
                headers["X-RateLimit-Remaining"] = str(max(0, account.daily_quota - account.quota_used))
            return None, headers

    def set_limits(self, account_name: str, *, rate_per_s: float | None = None,
                   daily_quota: int | None = None) -> None:
        with self.lock:
            account = self.account(account_name)
            account.rate_per_s = float(rate_per_s) if rate_per_s else None
            account.daily_quota = int(daily_quota) if daily_quota else None
            account.served.clear()

    def log_request(self, account_name: str, *, t: float, method: str, path: str, status: int,
                    user: int | None, over_limit: bool, fault: str | None = None,
                    jitter_s: float = 0.0, write: dict[str, Any] | None = None) -> None:
        """One request as answered; FAULT names the fault kind it was answered with (None: a
        plain answer), so a chaos run counts the faults that met a request where they happened.
        WRITE, for a write request, says what it did to the world (planfix.emulator.written): a
        202's record is completed when its change lands, so it is kept as given, not copied."""
        with self.lock:
            account = self.account(account_name)
            account.request_log.append({
                "t": t, "method": method, "path": path, "status": status, "user": user,
                "over_limit": over_limit, "fault": fault, "jitter_s": round(jitter_s, 4), "write": write,
            })
            if fault:
                account.fault_hits[fault] += 1
            if jitter_s > 0:
                account.fault_hits["jitter"] += 1

    def fault_hits(self, account_name: str) -> dict[str, int]:
        """Requests answered with each fault kind so far ("jitter": answers the jitter delayed),
        as the request log counts them, without copying the log."""
        with self.lock:
            return dict(self.account(account_name).fault_hits)

    def requests(self, account_name: str) -> list[dict[str, Any]]:
        with self.lock:
            return [{**entry, "write": dict(entry["write"]) if entry.get("write") else None}
                    for entry in self.account(account_name).request_log]

    def violations(self, account_name: str) -> list[dict[str, Any]]:
        """Requests that arrived over the rate limit (each was answered 429)."""
        return [entry for entry in self.requests(account_name) if entry["over_limit"]]

    def max_requests_in_window(self, account_name: str, window_s: float = RATE_WINDOW_S) -> int:
        """The most requests (served or rejected) that arrived within any window of window_s."""
        times = sorted(entry["t"] for entry in self.requests(account_name))
        best, start = 0, 0
        for end, moment in enumerate(times):
            while moment - times[start] >= window_s:
                start += 1
            best = max(best, end - start + 1)
        return best

    # -- faults -------------------------------------------------------------------------------

    def set_faults(self, account_name: str, **faults: Any) -> dict[str, Any]:
        """Replace the account's faults; unnamed kinds go back to off. `seed` reseeds the draws."""
        unknown = set(faults) - set(FAULT_DEFAULTS) - {"seed"}
        if unknown:
            raise ValueError(f"unknown fault kinds: {sorted(unknown)}; known: {sorted(FAULT_DEFAULTS)}")
        with self.lock:
            account = self.account(account_name)
            if "seed" in faults:
                account.rng = random.Random(f"{faults.pop('seed')}:{account_name}")
            account.faults = {**FAULT_DEFAULTS, **faults}
            return dict(account.faults)

    def faults(self, account_name: str) -> dict[str, Any]:
        with self.lock:
            return dict(self.account(account_name).faults)

    def draw_fault(self, account_name: str, *, task_update: bool) -> str | None:
        """Which fault, if any, hits this request; one seeded draw per active kind, in fixed order."""
        with self.lock:
            account = self.account(account_name)
            kinds = ["error_500", "error_500_after_commit", "timeout", "connection_closed", "slow"]
            if task_update:
                kinds[2:2] = ["busy_202", "slow_202", "lost_202"]
            for kind in kinds:
                share = float(account.faults.get(kind) or 0)
                if share > 0 and account.rng.random() < share:
                    return kind
            return None

    def draw_jitter(self, account_name: str) -> float:
        """This answer's extra delay in seconds under the jitter fault (0.0 when it is off)."""
        with self.lock:
            account = self.account(account_name)
            most = float(account.faults.get("jitter_s") or 0)
            return account.rng.uniform(0, most) if most > 0 else 0.0

    # -- changes answered 202 -----------------------------------------------------------------

    def locked(self, account_name: str, number: Any) -> str | None:
        """The 202 fault kind whose queued change to task NUMBER is not applied yet, or None."""
        with self.lock:
            account = self.account(account_name)
            try:
                pending = account.queued.get(int(number))
            except (TypeError, ValueError):
                return None
            return pending[0] if pending else None

    def queue_update(self, account_name: str, number: Any, apply: Callable[[], Any], delay_s: float,
                     kind: str) -> None:
        """Queue APPLY, a change answered 202, behind task NUMBER's lock: the first queued change
        locks the task for DELAY_S, then every change queued meanwhile is applied in order."""
        with self.lock:
            account = self.account(account_name)
            key = int(number)
            if key in account.queued:
                account.queued[key][1].append(apply)
                return
            account.queued[key] = (kind, [apply])
        self.schedule(delay_s, lambda: self._apply_queued(account_name, key))

    def _apply_queued(self, account_name: str, number: int) -> None:
        with self.lock:
            _, changes = self.account(account_name).queued.pop(number, ("", []))
            for change in changes:
                change()
