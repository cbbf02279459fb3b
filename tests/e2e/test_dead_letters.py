"""Dead letters end to end: a sync that fails for good lands in the DLQ with its reason, later
events for the same task wait behind it, and `crosslink dlq replay` after the cause is fixed syncs
everything in order, with nothing lost and nothing duplicated.

The permanent failure: the client's project that mirrors are created in is gone (an admin removed
it), so Planfix answers the create with 400 code 41. The fix: the project is back.
"""

from __future__ import annotations

import json

import pytest
import redis
from click.testing import CliRunner

from crosslink.base.settings import get_settings
from crosslink.cli import main
from crosslink.operations.check import check_link
from crosslink.queue.dead_letters import DeadLetters
from tests.e2e.conftest import eventually, settle

pytestmark = pytest.mark.e2e

LINK = "demo"
PAVEL = 2
MIRROR_PROJECT = 20  # where mirrors are created on the client side (links.yaml create.project)


@pytest.fixture
def cli(stack, monkeypatch):
    monkeypatch.setenv("REDIS_URL", stack.redis_url)
    monkeypatch.setenv("CROSSLINK_LINKS", stack.env["CROSSLINK_LINKS"])
    get_settings.cache_clear()
    yield lambda *args: CliRunner().invoke(main, list(args), catch_exceptions=False)
    get_settings.cache_clear()


def letters(stack) -> list[dict]:
    client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    try:
        return DeadLetters(client, LINK).letters()
    finally:
        client.close()


def held(stack, side: str, number: int) -> list[dict]:
    client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    try:
        return DeadLetters(client, LINK).held(side, number)
    finally:
        client.close()


def comments(stack, side, number):
    return stack.world.list_task_comments(side, number, {"typeList": "All", "fields": "id,description"})


def test_a_dead_letter_holds_later_events_until_replayed_then_all_sync_in_order(stack, cli):
    world = stack.world
    with world.lock:
        project = world.account("client").projects.pop(MIRROR_PROJECT)
    try:
        number = world.create_task("partner", {"name": "Blocked create", "processId": 1, "project": {"id": 10}},
                                   author=PAVEL)
        letter = eventually(lambda: next((item for item in letters(stack) if item["task"] == number), None),
                            what="the failed create to become a dead letter")
        assert letter["side"] == "partner" and letter["kind"] == "permanent"
        assert "code 41" in letter["reason"] and "Project not found" in letter["reason"]
        # Later events for the same task wait behind the letter instead of running.
        world.update_task("partner", number, {"name": "Blocked create, renamed"}, author=PAVEL)
        world.add_comment("partner", number, {"description": "<p>after the failure</p>"}, author=PAVEL)
        # (Two events close together may coalesce into one job, as the producer intends.)
        eventually(lambda: held(stack, "partner", number), what="the later events held")
        settle(stack)
        assert stack.mirror_of(LINK, "partner", number) is None
        assert len(letters(stack)) == 1, "a held event must not fail again on its own"
        listed = cli("dlq", "list", "--json")
        row = next(json.loads(line) for line in listed.output.splitlines() if json.loads(line)["task"] == number)
        assert row["id"] == letter["id"] and row["held"] >= 1 and "code 41" in row["reason"]
        shown = json.loads(cli("dlq", "show", letter["id"]).output)
        assert shown["blocks_task"] and [e["task"] for e in shown["held"]] == [number] * len(shown["held"])
    finally:
        with world.lock:
            world.account("client").projects[MIRROR_PROJECT] = project

    result = cli("dlq", "replay", letter["id"])
    assert result.exit_code == 0 and f"replayed dead letter {letter['id']}" in result.output
    copy = eventually(lambda: stack.mirror_of(LINK, "partner", number), what="the mirror after the replay")
    eventually(lambda: len(comments(stack, "client", copy["id"])) == 1, what="the held comment mirrored")
    settle(stack)
    view = world.get_task("client", copy["id"], "name")
    assert view["name"] == "Blocked create, renamed"
    assert "after the failure" in comments(stack, "client", copy["id"])[0]["description"]
    assert letters(stack) == [] and held(stack, "partner", number) == []
    assert cli("dlq", "list").output.strip() == "no dead letters"
    result = check_link(stack.config.links[0], stack.dumps(LINK))
    assert result.ok and result.lost == 0 and result.duplicates == 0, result.problems
    # Unblocked: the next event syncs on its own.
    world.update_task("partner", number, {"name": "Free again"}, author=PAVEL)
    eventually(lambda: world.get_task("client", copy["id"], "name")["name"] == "Free again", what="a live sync")
