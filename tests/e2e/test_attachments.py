"""Checklists and task-card files end to end: real Redis, a real Celery worker process, scenario
webhooks over HTTP, people acting through the emulator's web UI (World methods).

Example accounts (crosslink/examples): partner users 2 Pavel, 3 Olga; client users 5 Irina,
6 Marat; user 1 is each side's integration user. The demo link maps checklist and files both ways.
"""

from __future__ import annotations

import hashlib

import pytest
from redis import Redis

from crosslink.operations.check import check_link
from crosslink.queue.enqueue import Enqueuer
from crosslink.queue.names import BUT_CHECKLIST, CHECKLIST_HINT, synced_stamp
from tests.e2e.conftest import eventually, settle

pytestmark = pytest.mark.e2e

LINK = "demo"
PAVEL, IRINA_C, MARAT = 2, 5, 6


def checklist(stack, side, number):
    return stack.world.list_checklist(side, number, {"fields": "id,name,isDone"})


def card_files(stack, side, number):
    account = stack.world.account(side)
    return [(f["name"], account.files[f["id"]]["content"])
            for f in stack.world.task_files(side, number, only_description=True)]


def names(items):
    return sorted((item["name"], item["isDone"]) for item in items)


def assert_sides_match(stack):
    settle(stack)
    result = check_link(stack.config.links[0], stack.dumps(LINK))
    assert result.ok, result.problems
    return result


def test_checklist_items_cross_once_each_way_and_done_state_follows(stack):
    number = stack.world.create_task("partner", {"name": "Checklist walk", "processId": 1,
                                                 "project": {"id": 10}}, author=PAVEL)
    copy = eventually(lambda: stack.mirror_of(LINK, "partner", number), what="the task's mirror")["id"]
    settle(stack)
    draft = stack.world.create_checklist_item("partner", number, {"name": "Draft the plan"}, author=PAVEL)
    eventually(lambda: names(checklist(stack, "client", copy)) == [("Draft the plan", False)],
               what="the partner's item on the client")
    sign = stack.world.create_checklist_item("client", copy, {"name": "Sign off"}, author=MARAT)
    eventually(lambda: ("Sign off", False) in names(checklist(stack, "partner", number)),
               what="the client's item on the partner")
    settle(stack)
    assert names(checklist(stack, "partner", number)) == names(checklist(stack, "client", copy)) == [
        ("Draft the plan", False), ("Sign off", False)]

    # The client ticks off the partner's item (on its mirror); the partner ticks off the client's.
    mirror_of_draft = next(i["id"] for i in checklist(stack, "client", copy) if i["name"] == "Draft the plan")
    stack.world.update_checklist_item("client", copy, mirror_of_draft, {"isDone": True}, author=IRINA_C)
    eventually(lambda: stack.world.get_checklist_item("partner", number, draft, "isDone")["isDone"],
               what="done state on the partner")
    mirror_of_sign = next(i["id"] for i in checklist(stack, "partner", number) if i["name"] == "Sign off")
    stack.world.update_checklist_item("partner", number, mirror_of_sign, {"isDone": True, "name": "Sign off (v2)"},
                                      author=PAVEL)
    eventually(lambda: stack.world.get_checklist_item("client", copy, sign, "name,isDone")
               == {"id": sign, "name": "Sign off (v2)", "isDone": True}, what="rename and done on the client")
    result = assert_sides_match(stack)
    assert result.checklist_items >= 2
    # Once each, whatever the number of runs since: two items per side, none mirrored back.
    assert len(checklist(stack, "partner", number)) == len(checklist(stack, "client", copy)) == 2


def test_a_card_file_reaches_the_other_side_once_with_the_same_bytes(stack):
    number = stack.world.create_task("client", {"name": "Card files", "processId": 3, "project": {"id": 20},
                                                "assignees": {"users": [{"id": f"user:{IRINA_C}"}]}},
                                     author=MARAT)
    copy = eventually(lambda: stack.mirror_of(LINK, "client", number), what="the task's mirror")["id"]
    settle(stack)
    content = bytes(range(256)) * 40 + "конец".encode()
    file_id = stack.world.upload_file("client", "brief.bin", content, author=MARAT)
    stack.world.attach_file_to_task("client", file_id, number, author=MARAT)
    eventually(lambda: card_files(stack, "partner", copy), what="the file on the partner's card")
    # Later changes to the task sync again; the file is not copied a second time.
    stack.world.update_task("client", number, {"name": "Card files, renamed"}, author=MARAT)
    eventually(lambda: stack.world.get_task("partner", copy, "name")["name"] == "Card files, renamed",
               what="rename on the partner")
    partner_file = stack.world.upload_file("partner", "answer.txt", b"ok", author=PAVEL)
    stack.world.attach_file_to_task("partner", partner_file, copy, author=PAVEL)
    eventually(lambda: ("answer.txt", b"ok") in card_files(stack, "client", number), what="the answer on the client")
    result = assert_sides_match(stack)
    assert result.files >= 1
    assert card_files(stack, "partner", copy) == [("brief.bin", content), ("answer.txt", b"ok")]
    assert card_files(stack, "client", number) == [("brief.bin", content), ("answer.txt", b"ok")]
    dump = next(t for t in stack.dumps(LINK)["partner"] if t["id"] == copy)
    assert dump["files"][0]["sha256"] == hashlib.sha256(content).hexdigest()
    uploads = [r for r in stack.world.requests("partner") if r["method"] == "POST" and r["path"] in ("/file", "/file/")]
    assert len(uploads) == 1   # brief.bin copied once; answer.txt is the partner's own


def test_the_checker_sees_a_checklist_item_that_did_not_cross(stack):
    number = stack.world.create_task("partner", {"name": "Checker", "processId": 1, "project": {"id": 10}},
                                     author=PAVEL)
    copy = eventually(lambda: stack.mirror_of(LINK, "partner", number), what="the task's mirror")["id"]
    settle(stack)
    # Planted straight into the client's account, bypassing the scenarios: nothing syncs it.
    account = stack.world.account("client")
    scenarios = account.scenarios
    stack.world.set_scenarios("client", [])
    try:
        stack.world.create_checklist_item("client", copy, {"name": "unsynced"}, author=MARAT)
        result = check_link(stack.config.links[0], stack.dumps(LINK))
        assert not result.ok
        assert any("unsynced" in problem and "no match on the partner side" in problem
                   for problem in result.problems), result.problems
    finally:
        stack.world.set_scenarios("client", scenarios)
    # A field edit is explained by its field: its run reads no checklist (workers.hints)...
    stack.world.update_task("client", copy, {"name": "Checker, renamed"}, author=MARAT)
    eventually(lambda: stack.world.account("partner").tasks[number]["name"] == "Checker, renamed",
               what="the rename")
    settle(stack)
    assert ("unsynced", False) not in names(checklist(stack, "partner", number))
    # ...and records the stamp as seen but for the checklist, so the reconciliation poller has the
    # checklist alone looked at, which brings the item across.
    with Redis.from_url(stack.redis_url) as store:
        assert synced_stamp(store, LINK, "client", copy).startswith(BUT_CHECKLIST)
    enqueuer = Enqueuer(stack.redis_url)
    try:
        enqueuer.sync(LINK, "client", copy, CHECKLIST_HINT)
    finally:
        enqueuer.close()
    eventually(lambda: ("unsynced", False) in names(checklist(stack, "partner", number)), what="late item")
    assert_sides_match(stack)
