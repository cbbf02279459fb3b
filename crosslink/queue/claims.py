"""The claims a batch job takes on its link side's waiting tasks.

A task whose event is not part of a burst waits in its side's dirty set (crosslink.queue.enqueue);
one batch job of the side claims tasks from there, a batch at a time, and drops its claims when
their runs are done. A claim names its job and lapses: a job that died is delivered again and
takes its claims back, or another batch job takes them once they lapse. Each step is one Lua
script over the keys crosslink.queue.names spells, so producers and workers agree on them.
"""

from __future__ import annotations

from typing import NamedTuple

import redis

from crosslink.queue.names import batch_key, claims_key, dirty_key

# A batch job claims at most this many tasks at a time (one source read holds them all). A batch's
# writes go one after another, so its last task waits for the others': 10 keeps that wait to a few
# tens of milliseconds under a backlog (with 50, 400 events/s had a p99 near 2 s), and a backlog
# sends helpers, so batches share the worker slots.
BATCH_MAX = 10


# A batch's claim on a task lapses after this long (scaled like the task lock): long enough for
# any batch to finish, short enough that a dead job's tasks are taken up again soon.
CLAIM_TTL_MS = 60_000


MIN_CLAIM_TTL_MS = 10_000


# KEYS: dirty, claims, batch. ARGV: this job's id, claim TTL (ms), most tasks to claim. Returns
# {tasks claimed, tasks left waiting (due now), 1 if this job holds the flag, ms until the next
# held task is due or -1}. A task is due at its score: a held one (crosslink.queue.coalesce) is left
# where it is until its hold ends, and the flag is kept for it. The job holds its side's
# batch flag while it runs (taking it if no job holds it), so events join it; once it finds
# nothing waiting it drops the flag in the same step, so the next event sends a job. The flag
# lapses with the claims: a job killed mid-turn holds its side's events no longer than that.
# Claims this very job holds (it died, and its message came back) are taken whatever MOST says,
# then claims that lapsed (their job died), then the tasks that have waited longest; a claim's
# value is "<lapse ms>:<job id>". With MOST 0 (its link's slot is not free: workers.batch) the job
# claims nothing new and keeps the flag while tasks wait, to hand it on.
_CLAIM_LUA = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local flag = redis.call('GET', KEYS[3])
local owner = 0
if flag == false or flag == ARGV[1] then
  redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
  owner = 1
end
local most = tonumber(ARGV[3])
local taken = {}
local lapsed = {}
local claims = redis.call('HGETALL', KEYS[2])
for i = 1, #claims, 2 do
  local lapse, holder = string.match(claims[i + 1], '^(%d+):(.*)$')
  if holder == ARGV[1] then
    taken[#taken + 1] = claims[i]
  elseif lapse == nil or tonumber(lapse) <= now then
    lapsed[#lapsed + 1] = claims[i]
  end
end
local ready = 0
for _, task in ipairs(lapsed) do
  if #taken < most then taken[#taken + 1] = task else ready = ready + 1 end
end
if #taken < most then
  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, most - #taken)
  for _, task in ipairs(due) do
    taken[#taken + 1] = task
    redis.call('ZREM', KEYS[1], task)
  end
end
local left = redis.call('ZCOUNT', KEYS[1], '-inf', now) + ready
local held = -1
local next_held = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
if #next_held > 0 then
  held = math.ceil(tonumber(next_held[2]) - now)
end
if #taken == 0 and left == 0 and held < 0 and owner == 1 then
  redis.call('DEL', KEYS[3])
end
local claim = tostring(now + tonumber(ARGV[2])) .. ':' .. ARGV[1]
for _, task in ipairs(taken) do
  redis.call('HSET', KEYS[2], task, claim)
end
return {taken, left, owner, held}
"""


# KEYS: claims. ARGV: this job's id, then the tasks it is done with: their claims go, unless
# another job has claimed a task since.
_SETTLE_LUA = """
local mine = ':' .. ARGV[1]
for i = 2, #ARGV do
  local claim = redis.call('HGET', KEYS[1], ARGV[i])
  if claim and string.sub(claim, -#mine) == mine then
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return 0
"""


class Claim(NamedTuple):
    tasks: list[int]
    # How many tasks still wait for the side (in the dirty set, or claimed by a job that died).
    left: int
    # Whether this job holds its side's batch flag: it claims again after these, until none wait.
    owner: bool
    # Seconds until the next task held for coalescing (crosslink.queue.coalesce) is due; None: none held.
    held_s: float | None = None


def claim_batch(store: redis.Redis, link_name: str, side: str, job_id: str, ttl_ms: int,
                most: int = BATCH_MAX) -> Claim:
    """Claim up to MOST of SIDE's tasks that are due for JOB_ID (see _CLAIM_LUA)."""
    taken, left, owner, held = store.eval(_CLAIM_LUA, 3, dirty_key(link_name, side), claims_key(link_name, side),
                                          batch_key(link_name, side), job_id, ttl_ms, most)
    held = int(held)
    return Claim(sorted(int(task) for task in taken), int(left), bool(owner), None if held < 0 else held / 1000)


def settle_batch(store: redis.Redis, link_name: str, side: str, job_id: str, numbers: list[int]) -> None:
    """Drop JOB_ID's claims on NUMBERS: their runs are done (or handed to jobs of their own)."""
    if numbers:
        store.eval(_SETTLE_LUA, 1, claims_key(link_name, side), job_id, *numbers)
