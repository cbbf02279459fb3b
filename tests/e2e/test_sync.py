"""Two-way sync end to end: real Redis, a real Celery worker process, the emulator's scenarios
delivering webhooks over HTTP to the producer. People act through the emulator's web UI.

Example accounts (crosslink/examples): partner users 2 Pavel (lead, no counterpart), 3 Olga (no
counterpart), 4 Irina (paired with client 5); client users 5 Irina, 6 Marat (no counterpart).
Statuses: partner 1 New, 2 In work, 3 Review, 4 Closed; client 11 Submitted, 12 Accepted,
13 Waiting for client, 14 Delivered; the client's process allows 11->12, 12->13/14, 13->12, 14->12.
"""

from __future__ import annotations

import httpx
import pytest

from crosslink.operations.check import check_link
from crosslink.operations.status import link_status
from tests.e2e.conftest import eventually, settle

pytestmark = pytest.mark.e2e

LINK = "demo"
PAVEL, OLGA, IRINA_P = 2, 3, 4
IRINA_C, MARAT = 5, 6


def new_client_task(stack, name, **extra):
    body = {"name": name, "processId": 3, "project": {"id": 20},
            "assignees": {"users": [{"id": f"user:{IRINA_C}"}]}, **extra}
    return stack.world.create_task("client", body, author=MARAT)


def new_partner_task(stack, name, **extra):
    body = {"name": name, "processId": 1, "project": {"id": 10},
            "assignees": {"users": [{"id": f"user:{IRINA_P}"}]}, **extra}
    return stack.world.create_task("partner", body, author=PAVEL)


def mirror(stack, side, number):
    return eventually(lambda: stack.mirror_of(LINK, side, number), what=f"the mirror of {side} #{number}")


def task(stack, side, number):
    return stack.world.get_task(side, number, "id,name,description,status,assignees,endDateTime,parent,100,101,102,200,201,202")


def custom(task_view, field_id):
    for entry in task_view.get("customFieldData") or []:
        if entry["field"]["id"] == field_id:
            return entry.get("value")
    return None


def comments(stack, side, number):
    return stack.world.list_task_comments(side, number, {"typeList": "All", "fields": "id,description,owner,isDeleted,files,sourceDataVersion"})


def client_writes(stack):
    """POSTs to the client that change something (list endpoints are POSTs that only read)."""
    return sum(1 for r in stack.world.requests("client")
               if r["method"] == "POST" and not r["path"].endswith("/list"))


def assert_sides_match(stack):
    settle(stack)
    result = check_link(stack.config.links[0], stack.dumps(LINK))
    assert result.ok, result.problems


def test_client_task_appears_once_on_partner_with_mapped_fields(stack):
    number = new_client_task(stack, "Quarterly export", description="<p>By the 5th</p>",
                             customFieldData=[{"field": {"id": 200}, "value": 1200}],
                             endDateTime={"date": "05-01-2027", "time": "18:00"})
    copy = mirror(stack, "client", number)
    settle(stack)
    view = task(stack, "partner", copy["id"])
    assert view["name"] == "Quarterly export" and view["description"] == "<p>By the 5th</p>"
    assert view["status"]["id"] == 1                       # Submitted -> New
    assert [u["id"] for u in view["assignees"]["users"]] == [f"user:{IRINA_P}"]  # paired person
    assert custom(view, 100) == 1200                        # Cost -> Budget
    assert view["endDateTime"]["date"] == "05-01-2027"
    dumps = stack.dumps(LINK)
    assert sum(1 for t in dumps["partner"] if (t.get("sourceDataVersion") or "").endswith(f":client:{number}")) == 1
    assert_sides_match(stack)


def test_partner_task_appears_on_client_through_the_allowed_status_path(stack):
    number = new_partner_task(stack, "Data migration", status={"id": 2},
                              assignees={"users": [{"id": f"user:{OLGA}"}]},
                              customFieldData=[{"field": {"id": 101}, "value": "phone"}])
    copy = mirror(stack, "partner", number)
    eventually(lambda: task(stack, "client", copy["id"])["status"]["id"] == 12, what="client status 12")
    view = task(stack, "client", copy["id"])
    # Olga has no counterpart: the partner's representative on the client side stands in,
    # and the client's task names her.
    assert [u["id"] for u in view["assignees"]["users"]] == [f"user:{IRINA_C}"]
    assert "Olga Developer" in (custom(view, 202) or "")
    assert custom(view, 201) == "phone"
    assert_sides_match(stack)


def test_comments_cross_once_with_author_time_and_files_edits_and_withdrawals(stack):
    number = new_client_task(stack, "Comment traffic")
    copy = mirror(stack, "client", number)["id"]
    settle(stack)
    file_id = stack.world.upload_file("client", "spec.csv", b"a,b\n1,2\n", author=MARAT)
    first = stack.world.add_comment("client", number, {"description": "<p>Spec attached 📎</p>",
                                                        "files": [{"id": file_id}]}, author=MARAT)
    answer = stack.world.add_comment("partner", copy, {"description": "<p>Got it</p>"}, author=PAVEL)
    eventually(lambda: len(comments(stack, "partner", copy)) == 2 and len(comments(stack, "client", number)) == 2,
               what="both comments mirrored")
    settle(stack)
    on_partner = [c for c in comments(stack, "partner", copy) if c["id"] != answer]
    assert len(on_partner) == 1
    mirrored = on_partner[0]
    assert "Marat Analyst" in mirrored["description"] and "Spec attached 📎" in mirrored["description"]
    assert "Client Co" in mirrored["description"]             # the side label
    original_time = stack.world.get_comment("client", first, "dateTime")["dateTime"]
    assert original_time["date"] in mirrored["description"] and original_time["time"] in mirrored["description"]
    assert len(mirrored["files"]) == 1 and mirrored["files"][0]["name"] == "spec.csv"
    assert stack.world.account("partner").files[mirrored["files"][0]["id"]]["content"] == b"a,b\n1,2\n"
    on_client = [c for c in comments(stack, "client", number) if c["id"] != first]
    assert len(on_client) == 1 and "Pavel Lead" in on_client[0]["description"]

    stack.world.update_comment("client", first, {"description": "<p>Spec v2 attached</p>"}, author=MARAT)
    eventually(lambda: any("Spec v2" in c["description"] for c in comments(stack, "partner", copy)),
               what="edit mirrored")
    stack.world.delete_comment("partner", answer, author=PAVEL)
    eventually(lambda: any("Withdrawn" in c["description"] for c in comments(stack, "client", number)),
               what="deleted comment marked withdrawn")
    settle(stack)
    withdrawn = [c for c in comments(stack, "client", number) if "Withdrawn" in c["description"]]
    assert len(withdrawn) == 1 and not withdrawn[0]["isDeleted"] and "Got it" in withdrawn[0]["description"]
    assert len(comments(stack, "partner", copy)) == 2 and len(comments(stack, "client", number)) == 2
    assert_sides_match(stack)


def test_status_moves_both_ways_with_a_forbidden_direct_move_and_a_rule(stack):
    number = new_partner_task(stack, "Status walk")
    copy = mirror(stack, "partner", number)["id"]
    settle(stack)
    before = len(stack.world.requests("client"))
    stack.world.update_task("partner", number, {"status": {"id": 3}}, author=OLGA)   # New -> Review
    eventually(lambda: task(stack, "client", copy)["status"]["id"] == 13, what="client reaches 13")
    settle(stack)
    moves = [r for r in stack.world.requests("client")[before:]
             if r["method"] == "POST" and r["path"].endswith(f"/task/{copy}")]
    assert len(moves) >= 2, "11 -> 13 is forbidden in the client's process: it must go through 12"
    # The client accepts: 13 -> 12 -> 14; the rule closes the partner's task.
    stack.world.update_task("client", copy, {"status": {"id": 12}}, author=MARAT)
    stack.world.update_task("client", copy, {"status": {"id": 14}}, author=MARAT)
    eventually(lambda: task(stack, "partner", number)["status"]["id"] == 4, what="partner closed by the rule")
    assert_sides_match(stack)


def test_reassignment_follows_the_delegation_rules(stack):
    number = new_partner_task(stack, "Delegation")
    copy = mirror(stack, "partner", number)["id"]
    settle(stack)
    stack.world.update_task("partner", number, {"assignees": {"users": [{"id": f"user:{PAVEL}"}]}}, author=IRINA_P)
    eventually(lambda: "Pavel Lead" in (custom(task(stack, "client", copy), 202) or ""), what="note names Pavel")
    view = task(stack, "client", copy)
    assert [u["id"] for u in view["assignees"]["users"]] == [f"user:{IRINA_C}"]
    stack.world.update_task("partner", number, {"assignees": {"users": [{"id": f"user:{OLGA}"}]}}, author=PAVEL)
    eventually(lambda: "Olga Developer" in (custom(task(stack, "client", copy), 202) or ""), what="note names Olga")
    settle(stack)
    # The client's card names the real people in its note field: no note comment repeats it there.
    assert not [c for c in comments(stack, "client", copy) if "no counterpart" in c["description"]]
    # A client person without a counterpart: the partner's lead stands in on the partner side,
    # and the partner's note field names Marat.
    stack.world.update_task("client", copy, {"assignees": {"users": [{"id": f"user:{MARAT}"}]}}, author=IRINA_C)
    eventually(lambda: [u["id"] for u in task(stack, "partner", number)["assignees"]["users"]] == [f"user:{PAVEL}"],
               what="partner lead stands in for Marat")
    eventually(lambda: "Marat Analyst" in (custom(task(stack, "partner", number), 102) or ""), what="note names Marat")
    assert_sides_match(stack)


def test_duplicated_reordered_and_late_webhooks_cause_no_duplicate_and_no_loss(stack):
    number = new_client_task(stack, "Noisy webhooks")
    copy = mirror(stack, "client", number)["id"]
    settle(stack)
    secret = stack.env[stack.config.links[0].sides["client"].webhook_secret_env]
    url = f"{stack.producer.url}/hooks/{LINK}/client"
    stale = '{"event": "task_created", "task": "%d"}' % number
    stack.world.update_task("client", number, {"name": "Noisy webhooks, renamed"}, author=MARAT)
    for _ in range(5):   # replays and a stale "created" arriving after the change
        assert httpx.post(url, content=stale, auth=("planfix", secret)).status_code == 200
    # A webhook lost for a while: the scenario points nowhere, Planfix retries it later.
    good = stack.world.account("client").scenarios
    broken = [{**s, "url": "http://127.0.0.1:9/hooks"} for s in good]
    stack.world.set_scenarios("client", broken)
    stack.world.update_task("client", number, {"description": "<p>late</p>"}, author=MARAT)
    stack.world.set_scenarios("client", good)
    eventually(lambda: task(stack, "partner", copy)["description"] == "<p>late</p>"
               and task(stack, "partner", copy)["name"] == "Noisy webhooks, renamed", what="late change arrives")
    settle(stack)
    dumps = stack.dumps(LINK)
    assert sum(1 for t in dumps["partner"] if (t.get("sourceDataVersion") or "").endswith(f":client:{number}")) == 1
    assert_sides_match(stack)


def test_the_syncs_own_writes_never_come_back(stack):
    number = new_partner_task(stack, "No echo")
    copy = mirror(stack, "partner", number)["id"]
    settle(stack)
    stack.world.add_comment("partner", number, {"description": "<p>hello</p>"}, author=PAVEL)
    eventually(lambda: len(comments(stack, "client", copy)) == 1, what="comment mirrored")
    settle(stack)
    # Nobody touched the client's copy but the integration user: any delivery for it is an echo.
    assert [d for d in stack.world.deliveries("client") if d["task"] == copy] == []
    # Even with a scenario that forgets the author condition, the echo changes nothing.
    scenarios = stack.world.account("client").scenarios
    stack.world.set_scenarios("client", [{**s, "unless_author": None} for s in scenarios])
    try:
        writes_before = client_writes(stack)
        stack.world.update_task("partner", number, {"name": "No echo, renamed"}, author=PAVEL)
        eventually(lambda: task(stack, "client", copy)["name"] == "No echo, renamed", what="rename mirrored")
        settle(stack)
        # One rename on the client; the echo from the client's scenario plans nothing.
        assert client_writes(stack) - writes_before == 1
        partner_writes = [r for r in stack.world.requests("partner")
                          if r["method"] == "POST" and r["path"].endswith(f"/task/{number}")]
        assert partner_writes == []
    finally:
        stack.world.set_scenarios("client", scenarios)


def test_a_revoked_side_keeps_the_other_copy_whole_and_resumes(stack):
    number = new_partner_task(stack, "Revocation")
    copy = mirror(stack, "partner", number)["id"]
    stack.world.add_comment("partner", number, {"description": "<p>before the cut</p>"}, author=PAVEL)
    eventually(lambda: len(comments(stack, "client", copy)) == 1, what="comment mirrored")
    settle(stack)
    token = stack.env[stack.config.links[0].sides["client"].token_env]
    stack.world.revoke_token("client", token)
    try:
        stack.world.update_task("partner", number, {"name": "Revocation, renamed"}, author=PAVEL)
        stack.world.add_comment("partner", number, {"description": "<p>during the cut</p>"}, author=PAVEL)
        eventually(lambda: link_status(stack.env["CROSSLINK_LINKS"], stack.redis_url)[0]["severed"],
                   what="the link to be severed")
        # The comment's run is parked a moment after the sever shows (its job may wait behind
        # the sever's anchor and probe jobs).
        row = eventually(lambda: (lambda row: row if row["parked_events"] >= 1 else None)(
            link_status(stack.env["CROSSLINK_LINKS"], stack.redis_url)[0]), what="an event parked")
        assert "client" in row["severed"] and row["parked_events"] >= 1
        # Nothing was deleted on either side.
        assert task(stack, "client", copy)["name"] == "Revocation"
        assert len(comments(stack, "client", copy)) == 1 and len(people_said(stack, "partner", number)) == 2
        # The partner, who keeps working, is told on the task.
        [cut] = eventually(lambda: notes_on(stack, "partner", number), what="the note of the cut")
        assert "lost its access to Client Co" in cut and "nothing is deleted" in cut
    finally:
        stack.world.restore_token("client", token)
    eventually(lambda: task(stack, "client", copy)["name"] == "Revocation, renamed", what="resume after restore")
    eventually(lambda: len(comments(stack, "client", copy)) == 2, what="parked comment mirrored")
    settle(stack)
    assert link_status(stack.env["CROSSLINK_LINKS"], stack.redis_url)[0]["severed"] == {}
    [_, resumed] = notes_on(stack, "partner", number)
    assert "access to Client Co is back" in resumed
    assert notes_on(stack, "client", copy) == []
    assert_sides_match(stack)


def notes_on(stack, side, number):
    """The Crosslink notes on SIDE's task NUMBER, oldest first."""
    return [c["description"] for c in comments(stack, side, number) if c["description"].startswith("Crosslink: ")]


def people_said(stack, side, number):
    return [c for c in comments(stack, side, number) if not c["description"].startswith("Crosslink: ")]
