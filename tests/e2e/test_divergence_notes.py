"""Where the two sides end up different, people are told in their own account: a status move the
other side's process does not allow (the partner reopens a task the client has delivered; the
client's copy rightly stays, each side's task gets one note, and `crosslink status` counts it
until a later move makes the sides agree), and a person's edit lost to the field's owner (a note
with the value that lost). Judged by the comments people see in each account and the values
there. Real Redis, worker process, the emulator over loopback."""

from __future__ import annotations

import re

import pytest

from crosslink.operations.status import status_report
from crosslink.queue.enqueue import Enqueuer
from tests.e2e.conftest import eventually, polling, settle

pytestmark = pytest.mark.e2e

LINK = "demo"
PAVEL = 2
CLIENT_PERSON = 6
NEW, CLOSED = 1, 4          # the partner's process
DELIVERED = 14              # the client's: from Delivered it may only go back to Accepted (12)
PERIOD_S = 2.0


def status(stack, account: str, number: int) -> int:
    return stack.world.get_task(account, number, "status")["status"]["id"]


def notes(stack, account: str, number: int) -> list[str]:
    """The Crosslink notes on ACCOUNT's task NUMBER, as plain text."""
    listed = stack.world.list_task_comments(account, number, {"typeList": "All", "fields": "id,description"})
    texts = [re.sub(r"<[^>]+>", "", comment["description"] or "") for comment in listed]
    return [text for text in texts if text.startswith("Crosslink: ")]


def held(stack) -> int:
    report = status_report(str(stack.workdir / "links.yaml"), stack.redis_url)
    return next(row for row in report["links"] if row["link"] == LINK)["held_status_moves"]


def test_a_forbidden_reopen_is_told_on_both_sides_until_they_agree(stack):
    settle(stack)
    task = stack.world.create_task("partner", {"name": "Acceptance act", "processId": 1, "project": {"id": 10}},
                                   author=PAVEL)
    copy_ = eventually(lambda: (stack.mirror_of(LINK, "partner", task) or {}).get("id"), what="the mirror")
    stack.world.update_task("partner", task, {"status": {"id": CLOSED}}, author=PAVEL)
    eventually(lambda: status(stack, "client", copy_) == DELIVERED, what="the copy delivered")
    settle(stack)
    assert (notes(stack, "partner", task), notes(stack, "client", copy_), held(stack)) == ([], [], 0)

    stack.world.update_task("partner", task, {"status": {"id": NEW}}, author=PAVEL)
    eventually(lambda: notes(stack, "client", copy_), what="the client's note")
    settle(stack)
    assert status(stack, "client", copy_) == DELIVERED
    [partner_note], [client_note] = notes(stack, "partner", task), notes(stack, "client", copy_)
    assert "status 1" in partner_note and "status 14" in partner_note and "not carried" in partner_note
    assert "status 1" in client_note and "stays at status 14" in client_note
    assert held(stack) == 1

    stack.world.update_task("partner", task, {"name": "Acceptance act, v2"}, author=PAVEL)
    eventually(lambda: stack.world.get_task("client", copy_, "name")["name"] == "Acceptance act, v2",
               what="the rename")
    settle(stack)
    assert (len(notes(stack, "partner", task)), len(notes(stack, "client", copy_)), held(stack)) == (1, 1, 1)

    stack.world.update_task("partner", task, {"status": {"id": CLOSED}}, author=PAVEL)
    eventually(lambda: held(stack) == 0, what="the sides agreeing again")
    settle(stack)
    assert status(stack, "client", copy_) == DELIVERED
    assert (len(notes(stack, "partner", task)), len(notes(stack, "client", copy_))) == (1, 1)
    # The notes are the robot's: never mirrored to the other side as comments.
    assert not any("not carried" in text for text in notes(stack, "client", copy_))


def test_an_edit_lost_to_the_owner_leaves_a_note_with_the_value_that_lost(stack):
    """Both sides rename the task while no webhook fires; the partner owns names, so the partner's
    run writes its name over the client's. The client's task says what was lost, once."""
    settle(stack)
    task = stack.world.create_task("partner", {"name": "Pilot plan", "processId": 1, "project": {"id": 10}},
                                   author=PAVEL)
    copy_ = eventually(lambda: (stack.mirror_of(LINK, "partner", task) or {}).get("id"), what="the mirror")
    settle(stack)
    for account in ("partner", "client"):
        stack.world.set_scenarios(account, [])
    try:
        stack.world.update_task("partner", task, {"name": "Pilot plan (partner)"}, author=PAVEL)
        stack.world.update_task("client", copy_, {"name": "Pilot plan (client)"}, author=CLIENT_PERSON)
    finally:
        stack.point_scenarios_at(stack.producer.url)
    enqueuer = Enqueuer(stack.redis_url)
    try:
        enqueuer.sync(LINK, "partner", task)   # as the partner's webhook would
        enqueuer.sync(LINK, "client", copy_)
    finally:
        enqueuer.close()
    eventually(lambda: stack.world.get_task("client", copy_, "name")["name"] == "Pilot plan (partner)",
               what="the owner's name on the copy")
    settle(stack)
    assert stack.world.get_task("partner", task, "name")["name"] == "Pilot plan (partner)"
    [note] = notes(stack, "client", copy_)
    assert '"Pilot plan (client)"' in note and "ACME Consulting owns it" in note
    assert notes(stack, "partner", task) == []


def removed(stack) -> int:
    report = status_report(str(stack.workdir / "links.yaml"), stack.redis_url)
    return next(row for row in report["links"] if row["link"] == LINK)["removed_counterparts"]


def test_what_the_client_removes_is_told_on_the_partners_copies_which_stay(stack):
    """The client trashes one shared task, moves another out of the project, and deletes its copy
    of a partner comment: one note each on the partner's side; the partner's tasks and comment
    stay as they were, and later partner edits are not carried into what the client dropped."""
    settle(stack)
    made = [stack.world.create_task("client", {"name": f"Client task {n}", "processId": 3, "project": {"id": 20},
                                                "description": f"notes {n}"}, author=CLIENT_PERSON)
            for n in (1, 2)]
    copies = [eventually(lambda number=number: (stack.mirror_of(LINK, "client", number) or {}).get("id"),
                         what="the partner's copy") for number in made]
    partner_task = stack.world.create_task("partner", {"name": "Partner task", "processId": 1, "project": {"id": 10}},
                                           author=PAVEL)
    client_copy = eventually(lambda: (stack.mirror_of(LINK, "partner", partner_task) or {}).get("id"),
                             what="the client's copy")
    stack.world.add_comment("partner", partner_task, {"description": "<p>Scope agreed: phase 1</p>"}, author=PAVEL)
    mirrored = eventually(lambda: [c for c in stack.world.list_task_comments(
        "client", client_copy, {"typeList": "All", "fields": "id,description"}) if "Scope agreed" in c["description"]],
        what="the comment's copy")
    settle(stack)
    before = {number: stack.world.get_task("partner", number, "name,description") for number in copies}

    assert stack.world.update_task("client", made[0], {"isDeleted": True}, author=CLIENT_PERSON) == []
    assert stack.world.update_task("client", made[1], {"project": None}, author=CLIENT_PERSON) == []
    stack.world.delete_comment("client", mirrored[0]["id"], author=CLIENT_PERSON)
    # A task moved out of the project fires no scenario (they filter by project): the poll finds it.
    with polling(stack, PERIOD_S):
        eventually(lambda: all(notes(stack, "partner", number) for number in (*copies, partner_task)),
                   what="a note on each partner task")
    settle(stack)
    [trashed], [moved], [deleted] = (notes(stack, "partner", number) for number in (*copies, partner_task))
    assert "moved to the trash" in trashed and "moved out of the link's scope" in moved
    assert "deleted its copy of a comment" in deleted and "Scope agreed" in deleted
    assert removed(stack) == 2
    for number in copies:  # the partner's copies stay whole
        now = stack.world.get_task("partner", number, "name,description,isDeleted")
        assert (now["name"], now["description"], now["isDeleted"]) == (before[number]["name"],
                                                                        before[number]["description"], False)
    assert any("Scope agreed" in c["description"] and not c.get("isDeleted") for c in stack.world.list_task_comments(
        "partner", partner_task, {"typeList": "All", "fields": "id,description,isDeleted"}))

    stack.world.update_task("partner", copies[0], {"name": "Client task 1, renamed by the partner"}, author=PAVEL)
    settle(stack)
    assert stack.world.get_task("client", made[0], "name")["name"] == "Client task 1"
    assert [len(notes(stack, "partner", number)) for number in (*copies, partner_task)] == [1, 1, 1]
