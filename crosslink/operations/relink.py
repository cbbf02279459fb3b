"""`crosslink relink`: a link's registry rebuilt from Planfix alone, for when Redis lost it.

The registry of pairs lives in Redis; every mirror the sync creates also carries a marker naming
its original (workers.state.mirror_marker), so reading both accounts is enough to pair them again.
"""

from __future__ import annotations

from collections.abc import Mapping

import redis

from crosslink.operations.session import cli_client
from planfix.limiter import AccountLimiter
from schemas.links import load_links
from workers.state import LinkState, parse_marker


def relink(links_path: str, redis_url: str, link_name: str,
           env: Mapping[str, str] | None = None) -> dict[str, int]:
    """Rebuild LINK's registry from the markers (sourceDataVersion) on every mirror in Planfix.

    Every mirror the sync creates names its original in plain text, so the pairs can be read back
    from the two accounts alone, when Redis has lost them.
    """
    config = load_links(links_path)
    link = next((item for item in config.links if item.name == link_name), None)
    if link is None:
        raise SystemExit(f"no link named {link_name!r} in {links_path}")
    client = redis.Redis.from_url(redis_url)
    state = LinkState(client, link.name)
    limiter = AccountLimiter(client)
    found = {"tasks": 0, "comments": 0}
    for side in link.sides:
        planfix = cli_client(link, side, limiter, env)
        other = link.other(side)
        create = link.sides[side].create
        filters = [{"type": 5, "operator": "equal", "value": create.project}] if create.project else []
        for task in planfix.list_tasks(filters=filters, fields="id,sourceDataVersion"):
            marker = parse_marker(task.get("sourceDataVersion"))
            if not marker or marker[0] != link.name or marker[1] != other:
                continue
            state.pair("task", other, marker[2], side, int(task["id"]))
            state.mark_mirror("task", side, int(task["id"]))
            found["tasks"] += 1
            for comment in planfix.list_task_comments(int(task["id"]), fields="id,sourceDataVersion",
                                                      type_list="All"):
                comment_marker = parse_marker(comment.get("sourceDataVersion"))
                if comment_marker and comment_marker[0] == link.name and comment_marker[1] == other:
                    state.pair("comment", other, comment_marker[2], side, int(comment["id"]))
                    state.mark_mirror("comment", side, int(comment["id"]))
                    found["comments"] += 1
        planfix.close()
    return found
