"""Where the two sides end up different, people are told in their own account: a status move the
other side's process does not allow (the partner reopens a task the client has delivered; the
client's copy rightly stays, each side's task gets one note, and `crosslink status` counts it
until a later move makes the sides agree), and a person's edit lost to the field's owner (a note
with the value that lost). Judged by the comments people see in each account and the values
there. Real Redis, worker process, the emulator over loopback."""

from __future__ import annotations

import re

import pytest

from crosslink.operations import status_report
from producers.enqueue import Enqueuer
from tests.e2e.conftest import eventually, settle

pytestmark = pytest.mark.e2e

LINK = "demo"
PAVEL = 2
CLIENT_PERSON = 6
NEW, CLOSED = 1, 4          # the partner's process
DELIVERED = 14              # the client's: from Delivered it may only go back to Accepted (12)


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
    assert '"Pilot plan (client)"' in note and "partner side owns it" in note
    assert notes(stack, "partner", task) == []
