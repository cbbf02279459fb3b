"""If Redis loses the registry, `crosslink relink` rebuilds it from the markers in Planfix, and
syncing afterwards creates no second mirror."""

from __future__ import annotations

import pytest
import redis

from crosslink.operations.check import check_link
from crosslink.operations.relink import relink
from tests.e2e.conftest import eventually, settle

pytestmark = pytest.mark.e2e


def test_relink_rebuilds_the_registry_and_sync_goes_on_without_duplicates(stack):
    world = stack.world
    number = world.create_task("partner", {"name": "Relink me", "processId": 1, "project": {"id": 10}}, author=2)
    eventually(lambda: stack.mirror_of("demo", "partner", number), what="mirror")
    world.add_comment("partner", number, {"description": "<p>kept across the loss</p>"}, author=2)
    settle(stack)
    client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    before_tasks = client.hgetall("crosslink:reg:demo:task")
    before_comments = client.hgetall("crosslink:reg:demo:comment")
    assert before_tasks and before_comments
    lost = [key for pattern in ("crosslink:reg:*", "crosslink:mirrors:*", "crosslink:idem:*", "crosslink:snap:*")
            for key in client.scan_iter(pattern)]
    client.delete(*lost)

    found = relink(stack.env["CROSSLINK_LINKS"], stack.redis_url, "demo", env=stack.env)
    assert found["tasks"] == len(before_tasks) // 2
    assert client.hgetall("crosslink:reg:demo:task") == before_tasks
    assert client.hgetall("crosslink:reg:demo:comment") == before_comments

    world.update_task("partner", number, {"name": "Relink me, renamed"}, author=2)
    copy = stack.mirror_of("demo", "partner", number)["id"]
    eventually(lambda: world.get_task("client", copy, "name")["name"] == "Relink me, renamed", what="rename")
    settle(stack)
    result = check_link(stack.config.links[0], stack.dumps("demo"))
    assert result.ok and result.duplicates == 0, result.problems
