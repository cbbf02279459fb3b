"""One sync run against Planfix answering 202 (the write is queued): the run must not record the
change as agreed until a later run sees it applied, whether Planfix applies it late or never.

The emulator runs on loopback with the demo accounts; Redis is the test session's own.
"""

from __future__ import annotations

import copy
import json
import time

import pytest
import yaml

from crosslink.lab.demo import example
from crosslink.lab.stack import integration_token
from crosslink.queue.names import REJECTED_KEY, pending_key
from planfix.client import PlanfixClient
from planfix.emulator.server import EmulatorServer
from planfix.emulator.world import World
from planfix.errors import AccessDenied, InvalidRequest, RateLimited, TransientError
from schemas.links import load_links
from workers.canonical import canonical_task, task_fields
from workers.comment_policy import EARLIER_MARK, WITHDRAWN_MARK
from workers.field_diff import QUEUED
from workers.hints import Hints
from workers.idempotency import WriteOnce
from workers.state import LinkState
from workers.sync import SideFailure, TaskSync, expected_view

PAVEL, MARAT = 2, 6
# Applied after the queued run has read the task back, before the next run.
LATE_S = 0.4


class Pair:
    def __init__(self, world: World, server: EmulatorServer, redis_client, tmp_path):
        self.world = world
        emulator_config = example("emulator.yaml")
        links = copy.deepcopy(example("links.yaml"))
        for side, conf in links["links"][0]["sides"].items():
            conf["base_url"] = server.base_url(conf["account"])
        path = tmp_path / "links.yaml"
        path.write_text(yaml.safe_dump(links, allow_unicode=True), encoding="utf-8")
        self.link = load_links(path).links[0]
        self.clients = {
            side: PlanfixClient(conf.base_url, integration_token(emulator_config, conf.account, conf.integration_user),
                                account=conf.account)
            for side, conf in self.link.sides.items()}
        self.state = LinkState(redis_client, "demo")
        self.writes = WriteOnce(redis_client)

    def sync(self, side: str, number: int, hints: Hints | None = None, kept_reads: dict | None = None):
        return TaskSync(self.link, side, number, self.clients, self.state, self.writes, hints,
                        kept_reads=kept_reads).run()

    def requests(self) -> int:
        return sum(len(self.world.requests(account)) for account in ("partner", "client"))

    def view(self, side: str, number: int) -> dict:
        raw = self.world.get_task(side, number, "id,name,description,status,assignees,parent,100,101,200,201,202")
        return canonical_task(raw, self.link, side)

    def posts(self, side: str, number: int) -> int:
        return sum(1 for r in self.world.requests(side)
                   if r["method"] == "POST" and r["path"].endswith(f"/task/{number}"))


@pytest.fixture
def pair(redis_client, tmp_path):
    config = example("emulator.yaml")
    for account in config["accounts"].values():
        account["limits"] = {"rate_per_s": None, "daily_quota": None}
    world = World.from_config(config)
    try:
        with EmulatorServer(world) as server:
            made = Pair(world, server, redis_client, tmp_path)
            yield made
            for client in made.clients.values():
                client.close()
    finally:
        world.close()


def mirrored_task(pair: Pair, name: str) -> tuple[int, int]:
    number = pair.world.create_task("partner", {"name": name, "processId": 1, "project": {"id": 10},
                                                "description": "<p>v1</p>"}, author=PAVEL)
    report = pair.sync("partner", number)
    assert report.outcome == "created" and not report.queued
    return number, report.counterpart


def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_queued_change_that_planfix_never_applies_is_written_again(pair):
    number, copy_ = mirrored_task(pair, "Lost 202")
    pair.world.set_faults("client", lost_202=1.0)
    pair.world.update_task("partner", number, {"name": "Lost 202, renamed"}, author=PAVEL)
    report = pair.sync("partner", number)
    assert report.queued and "name" in report.queued[0]
    assert pair.view("client", copy_)["name"] == "Lost 202"
    # Not agreed: the name leaves the source's snapshot; the expected target value is kept.
    assert "name" not in pair.state.snapshot("partner", number)
    assert pair.state.queued_expectations("client", copy_) == {"name": "Lost 202, renamed",
                                                                QUEUED + "name": "Lost 202, renamed"}
    pair.world.set_faults("client")
    again = pair.sync("partner", number)
    assert again.outcome == "updated" and again.fields == ["name"] and not again.queued
    assert pair.view("client", copy_)["name"] == "Lost 202, renamed"
    assert pair.state.snapshot("partner", number)["name"] == "Lost 202, renamed"
    assert pair.state.snapshot("client", copy_)["name"] == "Lost 202, renamed"
    assert pair.state.queued_expectations("client", copy_) == {}


def test_a_change_undone_while_planfix_held_it_queued_stays_undone(pair):
    """As a checklist tick in the quick chaos run: the person put the old name back before the
    next run, which must still write it, or the queued rename, landing late, stands."""
    number, copy_ = mirrored_task(pair, "Undone 202")
    pair.world.set_faults("client", busy_202=1.0, busy_delay_s=LATE_S)
    pair.world.update_task("partner", number, {"name": "Undone 202, renamed"}, author=PAVEL)
    assert pair.sync("partner", number).queued
    pair.world.set_faults("client")
    pair.world.update_task("partner", number, {"name": "Undone 202"}, author=PAVEL)
    wait_for(lambda: pair.view("client", copy_)["name"] == "Undone 202, renamed")
    assert pair.sync("client", copy_).fields == []   # the rename landing is our echo
    assert pair.sync("partner", number).fields == ["name"]
    assert pair.view("client", copy_)["name"] == pair.view("partner", number)["name"] == "Undone 202"
    assert pair.sync("client", copy_).fields == [] and pair.sync("partner", number).fields == []


def test_a_write_planfix_still_holds_queued_explains_no_event(pair):
    """The run reading a write back (it was queued) must still look at the checklist an event of
    the same task points at: the key out of the snapshot is ours, not a person's change (the
    quick chaos run, seed 1, lost an untick coalesced with a status move: the read-back run and
    the poll's were explained by the unconfirmed status, and neither read the checklist)."""
    number, copy_ = mirrored_task(pair, "Queued, then ticked")
    item = pair.world.create_checklist_item("client", copy_, {"name": "Sign"}, author=MARAT)
    pair.sync("client", copy_)
    pair.world.set_faults("partner", lost_202=1.0)
    pair.world.update_task("client", copy_, {"name": "Queued, then ticked, renamed"}, author=MARAT)
    assert pair.sync("client", copy_, EDIT).queued
    pair.world.set_faults("partner")
    pair.world.update_checklist_item("client", copy_, item, {"isDone": True}, author=MARAT)
    pair.sync("client", copy_, EDIT)
    items = pair.world.list_checklist("partner", number, {"fields": "name,isDone"})
    assert [(entry["name"], entry["isDone"]) for entry in items] == [("Sign", True)]


def test_a_queued_change_applied_later_is_agreed_without_a_second_write(pair):
    number, copy_ = mirrored_task(pair, "Late 202")
    pair.world.set_faults("client", busy_202=1.0, busy_delay_s=LATE_S)
    pair.world.update_task("partner", number, {"description": "<p>v2</p>"}, author=PAVEL)
    assert pair.sync("partner", number).queued
    assert pair.state.snapshot("client", copy_)["description"] == "<p>v1</p>"
    wait_for(lambda: pair.view("client", copy_)["description"] == "<p>v2</p>")
    pair.world.set_faults("client")
    posts = pair.posts("client", copy_)
    read_back = pair.sync("partner", number)
    assert read_back.outcome == "noop" and pair.posts("client", copy_) == posts
    assert pair.state.snapshot("client", copy_)["description"] == "<p>v2</p>"
    assert pair.state.snapshot("partner", number)["description"] == "<p>v2</p>"
    # The client owns the description: had its snapshot stayed at v1, the client's copy would
    # count as changed by a person and the partner's next edit would lose the conflict.
    pair.world.update_task("partner", number, {"description": "<p>v3</p>"}, author=PAVEL)
    assert pair.sync("partner", number).fields == ["description"]
    assert pair.view("client", copy_)["description"] == "<p>v3</p>"


def test_a_queued_status_move_stops_the_path_until_it_is_seen(pair):
    number, copy_ = mirrored_task(pair, "Status 202")
    pair.world.set_faults("client", busy_202=1.0, busy_delay_s=LATE_S)
    pair.world.update_task("partner", number, {"status": {"id": 3}}, author=PAVEL)   # Review = client 13
    report = pair.sync("partner", number)
    assert report.queued == [f"client #{copy_} status 12"] and report.statuses == []
    assert "status" not in pair.state.snapshot("partner", number)
    wait_for(lambda: pair.view("client", copy_)["status"] == 12)
    pair.world.set_faults("client")
    rest = pair.sync("partner", number)
    assert rest.statuses == [13] and not rest.queued
    assert pair.view("client", copy_)["status"] == 13
    assert pair.state.snapshot("partner", number)["status"] == 3


def test_a_person_changing_the_target_meanwhile_is_not_mistaken_for_the_queued_write(pair):
    number, copy_ = mirrored_task(pair, "Race 202")
    pair.world.set_faults("client", lost_202=1.0)
    pair.world.update_task("partner", number, {"description": "<p>partner</p>"}, author=PAVEL)
    assert pair.sync("partner", number).queued
    pair.world.set_faults("client")
    pair.world.update_task("client", copy_, {"description": "<p>client</p>"}, author=MARAT)
    # Both changed the description; the client owns it, so the partner's run skips it ...
    assert "description" not in pair.sync("partner", number).fields
    assert pair.state.snapshot("client", copy_)["description"] != "<p>client</p>"
    # ... and the client's own run still sees its change and carries it back.
    assert pair.sync("client", copy_).fields == ["description"]
    assert pair.view("partner", number)["description"] == "<p>client</p>"


def test_expected_view_reads_the_bodies_the_planner_writes():
    now = {"name": "a", "status": 11, "cf:200": 5, "assignees": ["user:5"], "parent": 3, "end_date": "x"}
    body = {"name": "b", "status": {"id": 12}, "parent": {"id": 0}, "hasEndDate": False,
            "assignees": {"users": [{"id": "user:6"}, {"id": "user:5"}]},
            "customFieldData": [{"field": {"id": 200}, "value": 7.0}, {"field": {"id": 999}, "value": 1}],
            "startDateTime": "01-02-2027 10:00"}
    assert expected_view(now, body) == {"name": "b", "status": 12, "parent": None, "end_date": None,
                                        "start_date": "01-02-2027 10:00", "assignees": ["user:5", "user:6"],
                                        "cf:200": 7}
    assert expected_view(now, {}) == {}


def test_a_person_moving_the_new_mirror_before_the_run_ends_is_carried_back(pair):
    """The create leaves the mirror in its side's initial status; a person moving it before the
    run reads it back made a change of their own, not one both sides agreed on (the chaos suite
    found a client's Rejected never reaching the partner this way)."""
    number = pair.world.create_task("partner", {"name": "Rejected at once", "processId": 1, "project": {"id": 10}},
                                    author=PAVEL)
    client = pair.clients["client"]
    create = client.create_task

    def create_then_person_rejects(body):
        made = create(body)
        pair.world.update_task("client", made, {"status": {"id": 15}}, author=MARAT)
        return made

    client.create_task = create_then_person_rejects
    try:
        report = pair.sync("partner", number)
    finally:
        client.create_task = create
    assert report.outcome == "created"
    assert pair.state.snapshot("client", report.counterpart)["status"] == 11  # the initial status
    assert pair.sync("client", report.counterpart).statuses == [4]
    assert pair.view("partner", number)["status"] == 4


# --- API economy: what a run spends, by what its events were (workers.hints) ---------------------

EDIT = Hints(full=False, task_events=1)


def spent(pair: Pair, run) -> tuple[object, int]:
    before = pair.requests()
    report = run()
    return report, pair.requests() - before


def test_a_new_task_costs_a_read_and_a_create(pair):
    """The example link carries checklists and card files: the files come with the task read,
    the checklist is left to one look the poller asks for (workers.hints)."""
    number = pair.world.create_task("partner", {"name": "Economy", "processId": 1, "project": {"id": 10}},
                                    author=PAVEL)
    report, calls = spent(pair, lambda: pair.sync("partner", number, Hints(full=False, task_events=1)))
    assert report.outcome == "created" and calls == 2
    # No read-back, yet the counterpart's snapshot is what the emulator holds.
    assert pair.state.snapshot("client", report.counterpart) == pair.view("client", report.counterpart)


def test_an_edit_the_source_owns_costs_a_read_and_a_write(pair):
    number, copy_ = mirrored_task(pair, "Owned edit")
    pair.world.update_task("partner", number, {"name": "Owned edit, renamed"}, author=PAVEL)   # partner owns names
    report, calls = spent(pair, lambda: pair.sync("partner", number, EDIT))
    assert report.fields == ["name"] and calls == 2
    assert pair.view("client", copy_)["name"] == "Owned edit, renamed"
    assert pair.state.snapshot("client", copy_) == pair.view("client", copy_)


def test_an_edit_of_a_field_the_other_side_owns_reads_the_owner_first(pair):
    number, copy_ = mirrored_task(pair, "Contested")
    pair.world.update_task("client", copy_, {"description": "<p>client</p>"}, author=MARAT)
    pair.world.update_task("partner", number, {"description": "<p>partner</p>"}, author=PAVEL)
    report, calls = spent(pair, lambda: pair.sync("partner", number, EDIT))
    # The client owns descriptions and changed it too: read, and its value is not overwritten;
    # the partner's edit lost, which a note on the partner's task says (the third request).
    assert calls == 3 and "description" not in report.fields
    assert pair.view("client", copy_)["description"] == "<p>client</p>"
    [lost] = [c["description"] for c in pair.world.list_task_comments("partner", number, {"fields": "description"})]
    assert '"partner"' in lost and "<p>" not in lost and "Client Co owns it" in lost


def test_a_counterpart_with_a_waiting_event_is_read_not_assumed(pair, redis_client):
    number, copy_ = mirrored_task(pair, "Waiting")
    pair.world.update_task("client", copy_, {"priority": "Urgent"}, author=MARAT)
    redis_client.set(pending_key("demo", "client", copy_), "1")
    pair.world.update_task("partner", number, {"priority": "Urgent"}, author=PAVEL)
    report, calls = spent(pair, lambda: pair.sync("partner", number, EDIT))
    # Read (the snapshot says NotUrgent, the client already says Urgent): nothing to write.
    assert calls == 2 and report.fields == []


def test_a_comment_event_reads_that_comment_and_writes_its_mirror(pair):
    number, copy_ = mirrored_task(pair, "Commented")
    comment = pair.world.add_comment("partner", number, {"description": "<p>hello</p>"}, author=PAVEL)
    report, calls = spent(pair, lambda: pair.sync("partner", number, Hints(full=False, comments=(comment,))))
    assert report.comments_created == 1 and calls == 2


def test_a_comment_edited_then_deleted_before_any_run_saw_the_edit_is_withdrawn_with_its_last_text(pair):
    """Its webhooks dropped, a person edits a comment and deletes it: the withdrawn mirror says
    what the comment said when it was deleted, above the version that crossed before (the
    chaos oracle found a mirror withdrawn with a text its author had replaced)."""
    number, copy_ = mirrored_task(pair, "Edited then deleted")
    comment = pair.world.add_comment("partner", number, {"description": "<p>first</p>"}, author=PAVEL)
    pair.sync("partner", number)
    pair.world.update_comment("partner", comment, {"description": "<p>last</p>"}, author=PAVEL)
    pair.world.delete_comment("partner", comment, author=PAVEL)
    assert pair.sync("partner", number).comments_withdrawn == 1
    [mirror] = pair.world.list_task_comments("client", copy_, {"fields": "description"})
    current, earlier = mirror["description"].split(EARLIER_MARK)
    assert WITHDRAWN_MARK in current and "<p>last</p>" in current and "<p>first</p>" in earlier
    assert pair.sync("partner", number).outcome == "noop"


def test_a_field_edit_reads_no_comments_but_an_unexplained_event_does(pair):
    number, copy_ = mirrored_task(pair, "Explained")
    pair.world.add_comment("partner", number, {"description": "<p>first</p>"}, author=PAVEL)
    pair.sync("partner", number)
    pair.world.update_task("partner", number, {"name": "Explained, renamed"}, author=PAVEL)
    _, calls = spent(pair, lambda: pair.sync("partner", number, EDIT))
    assert calls == 2                     # the task (its card files come with it), the write
    comment = pair.world.list_task_comments("partner", number, {"fields": "id", "typeList": "All"})[0]["id"]
    pair.world.update_comment("partner", comment, {"description": "<p>first, edited</p>"}, author=PAVEL)
    report, calls = spent(pair, lambda: pair.sync("partner", number, EDIT))
    # Nothing mapped changed: the edit is found by listing comments (and the checklist).
    assert report.comments_updated == 1 and calls == 4


def test_a_resumed_run_answers_each_kept_read_once(pair):
    number, copy_ = mirrored_task(pair, "Resumed")
    pair.world.update_task("partner", number, {"name": "Resumed, renamed"}, author=PAVEL)
    first = TaskSync(pair.link, "partner", number, pair.clients, pair.state, pair.writes, EDIT)
    first._call("partner", "get_task", number, fields=task_fields(pair.link, "partner"))
    kept = first.kept_reads
    assert len(kept) == 1
    report, calls = spent(pair, lambda: pair.sync("partner", number, EDIT.waited(wrote=False), kept))
    assert report.fields == ["name"] and calls == 1          # the write only


def test_a_run_that_wrote_keeps_only_the_reads_of_sides_it_did_not_write_to(pair):
    """A run that must wait for its turn after writing keeps its own task's read if it wrote only
    to the counterpart: read again, it took its turn's slot each time, and a run needing two
    requests of one account never got further on a busy account. What it wrote to is read again."""
    number, copy_ = mirrored_task(pair, "Resumed")
    pair.world.update_task("partner", number, {"name": "Resumed, renamed"}, author=PAVEL)
    first = TaskSync(pair.link, "partner", number, pair.clients, pair.state, pair.writes, EDIT)
    first._call("partner", "get_task", number, fields=task_fields(pair.link, "partner"))
    first._call("client", "get_task", copy_, fields=task_fields(pair.link, "client"))
    first._call("client", "update_task", copy_, {"name": "Resumed, renamed"})
    kept = first.resumable_reads()
    assert [json.loads(key)[:2] for key in kept] == [["partner", "get_task"]]
    report, calls = spent(pair, lambda: pair.sync("partner", number, EDIT.waited(wrote=True), kept))
    # The client read again (its snapshot may not stand in); the name is there.
    assert calls == 1 and report.fields == []
    first._call("partner", "update_task", number, {"priority": "Urgent"})
    assert first.resumable_reads() == {}


def parent_and_child(pair) -> tuple[int, int]:
    """A partner task and its subtask, neither mirrored yet."""
    parent = pair.world.create_task("partner", {"name": "Parent", "processId": 1, "project": {"id": 10}},
                                    author=PAVEL)
    child = pair.world.create_task("partner", {"name": "Child", "processId": 1, "project": {"id": 10},
                                               "parent": {"id": parent}}, author=PAVEL)
    return parent, child


def test_a_child_whose_parent_is_paired_while_it_waits_runs_again(pair, redis_client):
    parent, child = parent_and_child(pair)

    class ParentPairedMeanwhile(LinkState):
        """The parent's run pairs it (and takes the waiting children, none yet) just as the child's
        run finds it unpaired."""

        def wait_for_parent(self, side: str, parent_number: int, child_number: int) -> None:
            parent_run = TaskSync(pair.link, side, parent_number, pair.clients, LinkState(redis_client, "demo"),
                                  pair.writes)
            assert parent_run.run().outcome == "created"
            super().wait_for_parent(side, parent_number, child_number)

    report = TaskSync(pair.link, "partner", child, pair.clients, ParentPairedMeanwhile(redis_client, "demo"),
                      pair.writes).run()
    assert report.outcome == "created" and report.follow_up == [("partner", child)]
    again = pair.sync("partner", child)
    assert pair.view("client", again.counterpart)["parent"] == pair.state.counterpart("task", "partner", parent)


def test_a_parent_paired_just_after_the_childs_plan_looked_is_not_taken_as_agreed(pair, redis_client):
    parent, child = parent_and_child(pair)

    class PairedJustAfterThePlanLooked(LinkState):
        def counterpart_number(self, side: str, number: int) -> int | None:
            answer = super().counterpart_number(side, number)
            if number == parent and answer is None:  # the parent's run, in another job, pairs it now
                TaskSync(pair.link, side, parent, pair.clients, LinkState(redis_client, "demo"), pair.writes).run()
            return answer

    report = TaskSync(pair.link, "partner", child, pair.clients,
                      PairedJustAfterThePlanLooked(redis_client, "demo"), pair.writes).run()
    assert report.outcome == "created" and report.follow_up == [("partner", child)]
    pair.sync("partner", child)
    assert pair.view("client", report.counterpart)["parent"] == pair.state.counterpart("task", "partner", parent)


# --- an event is explained by a person's change, never by one of the sync's own writes ----------

def commented_pair(pair: Pair, name: str) -> tuple[int, int, int]:
    """A mirrored pair whose client task has a comment, mirrored too."""
    number, copy_ = mirrored_task(pair, name)
    comment = pair.world.add_comment("client", copy_, {"description": "<p>agreed</p>"}, author=MARAT)
    assert pair.sync("client", copy_, Hints(full=False, comments=(comment,))).comments_created == 1
    return number, copy_, comment


def edit_comment_and_sync(pair: Pair, copy_: int, comment: int) -> None:
    """A person edits the client's comment: its webhook is a task event; the client's run must
    carry the edit."""
    pair.world.update_comment("client", comment, {"description": "<p>agreed, amended</p>"}, author=MARAT)
    report = pair.sync("client", copy_, EDIT)
    assert report.comments_updated == 1
    mirrored = pair.world.list_task_comments("partner", pair.state.counterpart("task", "client", copy_),
                                             {"fields": "id,description", "typeList": "All"})
    assert any("agreed, amended" in (c.get("description") or "") for c in mirrored)


def test_a_queued_write_landing_late_does_not_explain_a_comment_edit(pair):
    """The chaos suite lost a comment edit this way: the partner's rename of the client's copy was
    queued (202) and applied later; the client's next event, a comment edit, found the name
    changed against its snapshot and took that for the event's cause, reading no comments."""
    number, copy_, comment = commented_pair(pair, "Late echo")
    pair.world.set_faults("client", busy_202=1.0, busy_delay_s=LATE_S)
    pair.world.update_task("partner", number, {"name": "Late echo, renamed"}, author=PAVEL)
    assert pair.sync("partner", number, EDIT).queued
    wait_for(lambda: pair.view("client", copy_)["name"] == "Late echo, renamed")
    pair.world.set_faults("client")
    edit_comment_and_sync(pair, copy_, comment)
    # The client's snapshot took the landed name: no longer expected.
    assert pair.state.queued_expectations("client", copy_) == {}


def failing_partner_run(pair: Pair, number: int, update) -> None:
    """The partner's run of NUMBER with the client's update_task replaced by UPDATE: it fails."""
    client = pair.clients["client"]
    original = client.update_task
    client.update_task = update
    try:
        with pytest.raises(SideFailure):
            pair.sync("partner", number, EDIT)
    finally:
        client.update_task = original


def test_a_write_held_back_or_refused_unsent_is_not_expected(pair):
    """Only a write Planfix may have applied is remembered: one our limiter held back, or one
    Planfix refused for its rate, was not (and would cost the next runs reads for nothing)."""
    number, copy_ = mirrored_task(pair, "Held")
    for scope in ("limiter", "rate"):
        pair.world.update_task("partner", number, {"name": f"Held, {scope}"}, author=PAVEL)

        def refused(task, body, scope=scope):
            raise RateLimited("wait", retry_after_ms=1000, scope=scope)

        failing_partner_run(pair, number, refused)
        assert pair.state.queued_expectations("client", copy_) == {}


def test_a_write_of_a_run_that_then_failed_does_not_explain_a_comment_edit(pair):
    """The partner's run renames the client's copy, then fails on its next request; before its
    retry, the client's comment edit must not be taken as explained by that rename."""
    number, copy_, comment = commented_pair(pair, "Failed echo")
    pair.world.update_task("partner", number, {"name": "Failed echo, renamed",
                                               "status": {"id": 3}}, author=PAVEL)
    update = pair.clients["client"].update_task

    def rename_then_fail(task, body):
        if "status" in body:
            raise TransientError("500 from Planfix", maybe_applied=False)
        return update(task, body)

    failing_partner_run(pair, number, rename_then_fail)
    assert pair.view("client", copy_)["name"] == "Failed echo, renamed"
    assert pair.state.queued_expectations("client", copy_) == {"name": "Failed echo, renamed", "status": 12}
    edit_comment_and_sync(pair, copy_, comment)
    # The partner's retry finds the name there, moves the status and leaves nothing expected.
    retry = pair.sync("partner", number, EDIT)
    assert retry.fields == [] and retry.statuses == [12, 13]
    assert pair.state.queued_expectations("client", copy_) == {}


# --- events checked against Planfix before anything is written --------------------------------

def rejected_events(redis_client) -> list[dict]:
    return [json.loads(item) for item in redis_client.lrange(REJECTED_KEY, 0, -1)]


def test_the_worker_rejects_into_the_list_crosslink_rejected_shows():
    from producers import receiver

    assert REJECTED_KEY == receiver.REJECTED_KEY


def comment_event(*comments: int) -> Hints:
    return Hints(full=False, comments=tuple(comments))


def client_writes(pair: Pair) -> list[dict]:
    """The client account's requests that change something (every list is a POST that reads)."""
    return [r for r in pair.world.requests("client")
            if r["method"] != "GET" and not r["path"].endswith("/list")]


def test_a_comment_of_another_task_is_rejected_and_never_mirrored(pair, redis_client):
    number, copy_ = mirrored_task(pair, "Linked")
    # The other task: one outside every link (no project), whose comment is confidential.
    outside = pair.world.create_task("partner", {"name": "Internal", "processId": 1}, author=PAVEL)
    secret = pair.world.add_comment("partner", outside, {"description": "<p>margin 40%</p>"}, author=PAVEL)
    before = len(client_writes(pair))
    report, calls = spent(pair, lambda: pair.sync("partner", number, comment_event(secret)))
    assert report.outcome == "rejected" and report.comments_created == 0
    assert calls == 1                                         # the comment read names its task
    assert len(client_writes(pair)) == before
    assert pair.world.list_task_comments("client", copy_, {"typeList": "All"}) == []
    assert pair.state.counterpart("comment", "partner", secret) is None
    assert secret not in pair.state.comment_fingerprints("partner", number)
    [record] = rejected_events(redis_client)
    assert record["task"] == number and record["comment"] == secret and record["link"] == "demo"
    assert f"on task {outside}" in record["reason"] and "margin" not in json.dumps(record)


def test_a_comment_of_another_linked_task_is_rejected_beside_the_real_one(pair, redis_client):
    number, copy_ = mirrored_task(pair, "Linked A")
    other, _ = mirrored_task(pair, "Linked B")
    own = pair.world.add_comment("partner", number, {"description": "<p>ours</p>"}, author=PAVEL)
    foreign = pair.world.add_comment("partner", other, {"description": "<p>theirs</p>"}, author=PAVEL)
    report = pair.sync("partner", number, comment_event(own, foreign))
    assert report.comments_created == 1 and report.outcome == "noop" and len(report.rejected) == 1
    texts = [c["description"] for c in pair.world.list_task_comments("client", copy_, {"typeList": "All", "fields": "id,description"})]
    assert len(texts) == 1 and "ours" in texts[0]
    assert [r["comment"] for r in rejected_events(redis_client)] == [foreign]


def test_a_foreign_comment_coalesced_with_a_task_edit_is_rejected_and_the_edit_syncs(pair, redis_client):
    number, copy_ = mirrored_task(pair, "Mixed")
    outside = pair.world.create_task("partner", {"name": "Internal", "processId": 1}, author=PAVEL)
    secret = pair.world.add_comment("partner", outside, {"description": "<p>secret</p>"}, author=PAVEL)
    pair.world.update_task("partner", number, {"name": "Mixed, renamed"}, author=PAVEL)
    report = pair.sync("partner", number, Hints(full=False, task_events=1, comments=(secret,)))
    assert report.fields == ["name"] and report.comments_created == 0 and report.rejected
    assert pair.view("client", copy_)["name"] == "Mixed, renamed"
    assert pair.world.list_task_comments("client", copy_, {"typeList": "All"}) == []


def test_a_comment_that_does_not_exist_is_a_recorded_no_op(pair, redis_client):
    number, copy_ = mirrored_task(pair, "Ghost")
    before = len(client_writes(pair))
    report = pair.sync("partner", number, comment_event(987654))
    assert report.outcome == "missing" and report.missing == ["comment 987654"]
    assert len(client_writes(pair)) == before and rejected_events(redis_client) == []
    # The task's next real comment syncs as ever.
    real = pair.world.add_comment("partner", number, {"description": "<p>real</p>"}, author=PAVEL)
    assert pair.sync("partner", number, comment_event(real)).comments_created == 1


def test_a_comment_the_link_user_may_not_see_is_rejected_not_severing(pair, redis_client):
    number, _ = mirrored_task(pair, "Hidden")

    def denied(comment_id, fields):
        raise AccessDenied("GET /comment/{id}: HTTP 403 code 6", http_status=403, code=6)

    pair.clients["partner"].get_comment = denied
    report = pair.sync("partner", number, comment_event(4242))
    assert report.outcome == "rejected" and "may not see" in report.rejected[0]
    assert pair.state.severed() == {}


def test_a_failed_read_is_tagged_as_a_read_and_a_failed_write_is_not(pair):
    number, copy_ = mirrored_task(pair, "Tagged")

    def broken(*_args, **_kwargs):
        raise InvalidRequest("HTTP 400 code 41", http_status=400, code=41)

    pair.clients["partner"].get_comment = broken
    with pytest.raises(SideFailure) as read:
        pair.sync("partner", number, comment_event(1))
    assert read.value.read
    pair.world.update_task("partner", number, {"name": "Tagged, renamed"}, author=PAVEL)
    pair.clients["client"].update_task = broken
    with pytest.raises(SideFailure) as write:
        pair.sync("partner", number, EDIT)
    assert not write.value.read


@pytest.mark.parametrize("first", ["partner", "client"])
def test_an_edit_lost_to_the_owner_is_told_once_on_the_losers_task_whichever_run_comes_first(pair, first):
    number, copy_ = mirrored_task(pair, "Contested")
    pair.world.update_task("partner", number, {"name": "Contested (partner)"}, author=PAVEL)
    pair.world.update_task("client", copy_, {"name": "Contested (client)"}, author=MARAT)
    tasks = {"partner": number, "client": copy_}
    for side in (first, "client" if first == "partner" else "partner", "partner", "client"):
        pair.sync(side, tasks[side])
    assert pair.view("client", copy_)["name"] == pair.view("partner", number)["name"] == "Contested (partner)"

    def notes(account, task):
        listed = pair.world.list_task_comments(account, task, {"typeList": "All", "fields": "description"})
        return [c["description"] for c in listed if c["description"].startswith("Crosslink: ")]

    [note] = notes("client", copy_)
    assert '"Contested (client)"' in note and "ACME Consulting owns it" in note
    assert notes("partner", number) == []
