"""workers.sync.attachments: the pure decisions exhaustively (with hypothesis), then whole TaskSync runs
in-process against the emulator (Starlette's TestClient) and a real Redis, with the emulator's
request log as the witness of what each run cost and wrote."""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Iterator

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from starlette.testclient import TestClient

from crosslink.lab.demo import example
from crosslink.operations.check import check_link
from planfix.client import PlanfixClient
from planfix.emulator.app import create_app
from planfix.emulator.world import World
from schemas.links import DIRECTIONS, FieldRule, parse_links
from workers.idempotency import WriteOnce
from workers.state import LinkState
from workers.sync import TaskSync
from workers.sync.attachments import (
    ITEM_KEYS,
    adoptable,
    agreed_after_write,
    agrees,
    flows,
    item_changes,
    item_view,
    parents_first,
    queued_on_mirror,
    queued_on_source,
    seen_echo,
)

PAVEL, MARAT, IRINA_C = 2, 6, 5

views = st.fixed_dictionaries({"name": st.text(max_size=5), "isDone": st.booleans()})


# ==============================================================================================
# Pure decisions


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_flows_follows_the_direction(direction):
    assert flows(direction, "partner", "client") is (direction in ("both", "partner_to_client"))
    assert flows(direction, "client", "partner") is (direction in ("both", "client_to_partner"))


def test_item_view_keeps_text_and_done_only():
    assert item_view({"id": 3, "name": "x", "isDone": True, "parent": {"id": 1}}) == {"name": "x", "isDone": True}
    assert item_view({"id": 3}) == {"name": "", "isDone": False}


@given(views, st.one_of(st.none(), views))
def test_item_changes_are_exactly_the_differing_values(current, agreed):
    changes = item_changes(current, agreed)
    if agreed is None:
        assert changes == current
    else:
        assert set(changes) == {key for key in ITEM_KEYS if current[key] != agreed[key]}
        assert {**agreed, **changes} == current


@given(st.one_of(st.none(), views), views, st.data())
def test_agreed_after_write_changes_only_what_was_written(previous, source, data):
    written = {key: source[key] for key in data.draw(st.sets(st.sampled_from(ITEM_KEYS)))}
    after = agreed_after_write(previous, written, source)
    for key in ITEM_KEYS:
        if key in written:
            assert after[key] == written[key]
        else:
            assert after[key] == (previous if previous is not None else source)[key]


def test_adoptable_takes_the_first_unclaimed_item_of_that_name():
    items = [{"id": 9, "name": "Deploy"}, {"id": 4, "name": "Deploy"}, {"id": 5, "name": "Test"}]
    assert adoptable("Deploy", items, lambda _: False) == 4
    assert adoptable("Deploy", items, lambda item: item == 4) == 9
    assert adoptable("Deploy", items, lambda _: True) is None
    assert adoptable("Missing", items, lambda _: False) is None


@given(st.lists(st.tuples(st.integers(1, 30), st.integers(0, 30)), unique_by=lambda pair: pair[0], max_size=15))
def test_parents_first_places_every_parent_before_its_children(pairs):
    items = [{"id": item, "parent": {"id": parent} if parent else None} for item, parent in pairs]
    ordered = parents_first(items)
    assert sorted(item["id"] for item in ordered) == sorted(item["id"] for item in items)
    position = {item["id"]: n for n, item in enumerate(ordered)}
    for item, parent in pairs:
        # Cycles cannot happen in Planfix; where a random draw makes one, any order is fine.
        if parent in position and not _in_cycle(dict(pairs), item):
            assert position[parent] < position[item]


def _in_cycle(parents: dict[int, int], start: int) -> bool:
    seen, cursor = set(), start
    while cursor in parents and cursor not in seen:
        seen.add(cursor)
        cursor = parents[cursor]
    return cursor in seen


# ==============================================================================================
# Whole runs in-process


class Pair:
    """The example accounts in-process, a sync of the demo link, and a way to run it."""

    def __init__(self, world: World, http: TestClient, redis_client, link):
        self.world = world
        self.link = link
        self.state = LinkState(redis_client, link.name)
        self.writes = WriteOnce(redis_client)
        self.clients = {side: PlanfixClient(f"http://testserver/{side}/rest", f"demo-{side}-sync",
                                            account=side, http=http) for side in ("partner", "client")}

    def run(self, side: str, number: int):
        return TaskSync(self.link, side, number, self.clients, self.state, self.writes).run()

    def with_directions(self, checklist: str = "both", files: str = "both") -> None:
        self.link = dataclasses.replace(self.link, fields=dataclasses.replace(
            self.link.fields, checklist=FieldRule(checklist), files=FieldRule(files)))

    def items(self, side: str, number: int) -> list[tuple[str, bool]]:
        return [(i["name"], i["isDone"]) for i in self.world.list_checklist(side, number, {"fields": "name,isDone"})]

    def requests(self, side: str, since: int = 0) -> list[dict]:
        return self.world.requests(side)[since:]

    def check(self, number: int, copy_: int):
        """crosslink.operations.check on just this pair (the seeded tasks are not mirrored here)."""
        dumps = {side: [t for t in self.world.dump_tasks(side) if t["id"] == wanted]
                 for side, wanted in (("partner", number), ("client", copy_))}
        return check_link(self.link, dumps)

    def new_partner_task(self, name: str) -> tuple[int, int]:
        number = self.world.create_task("partner", {"name": name, "processId": 1, "project": {"id": 10}},
                                        author=PAVEL)
        self.run("partner", number)
        return number, self.state.counterpart("task", "partner", number)


@pytest.fixture
def pair(redis_client) -> Iterator[Pair]:
    seed = copy.deepcopy(example("emulator.yaml"))
    for account in seed["accounts"].values():
        account["limits"] = {}
        account["scenarios"] = []   # the runs are driven by hand here
    world = World.from_config(seed)
    link = parse_links(yaml.safe_dump(example("links.yaml"))).links[0]
    with TestClient(create_app(world)) as http:
        yield Pair(world, http, redis_client, link)
    world.close()


def checklist_calls(entries: list[dict]) -> list[tuple[str, str]]:
    return [(e["method"], e["path"]) for e in entries if "/checklist" in e["path"]]


def test_an_item_is_mirrored_once_and_an_unchanged_checklist_costs_one_read(pair):
    number, copy_ = pair.new_partner_task("Once")
    pair.world.create_checklist_item("partner", number, {"name": "Draft"}, author=PAVEL)
    pair.run("partner", number)
    assert pair.items("client", copy_) == [("Draft", False)]
    partner_before, client_before = len(pair.requests("partner")), len(pair.requests("client"))
    pair.run("partner", number)
    pair.run("client", copy_)   # the mirror's side: its item is paired, so nothing goes back
    assert pair.items("partner", number) == [("Draft", False)]
    assert pair.items("client", copy_) == [("Draft", False)]
    assert checklist_calls(pair.requests("partner", partner_before)) == [
        ("POST", f"/task/{number}/checklist/list")]
    assert checklist_calls(pair.requests("client", client_before)) == [("POST", f"/task/{copy_}/checklist/list")]


def test_done_state_and_text_cross_both_ways_without_clobbering(pair):
    number, copy_ = pair.new_partner_task("Both ways")
    item = pair.world.create_checklist_item("partner", number, {"name": "Review"}, author=PAVEL)
    pair.run("partner", number)
    mirror = pair.state.counterpart("checklist", "partner", item)
    # Both sides change the item before either run: the partner renames it, the client ticks it.
    pair.world.update_checklist_item("partner", number, item, {"name": "Review v2"}, author=PAVEL)
    pair.world.update_checklist_item("client", copy_, mirror, {"isDone": True}, author=MARAT)
    pair.run("partner", number)
    assert pair.items("client", copy_) == [("Review v2", True)]   # the tick survived the rename
    pair.run("client", copy_)
    assert pair.items("partner", number) == [("Review v2", True)]
    before = len(pair.requests("client"))
    pair.run("partner", number)   # agreed now: nothing more to write
    assert [e for e in pair.requests("client", before) if e["method"] == "POST"
            and e["path"] == f"/task/{copy_}/checklist/{mirror}"] == []
    assert pair.check(number, copy_).ok


def test_a_one_way_link_reads_nothing_on_the_other_side_and_none_reads_nothing(pair):
    pair.with_directions(checklist="partner_to_client", files="none")
    number, copy_ = pair.new_partner_task("One way")
    pair.world.create_checklist_item("client", copy_, {"name": "client only"}, author=MARAT)
    before = len(pair.requests("client"))
    pair.run("client", copy_)
    assert checklist_calls(pair.requests("client", before)) == []
    assert not [e for e in pair.requests("client", before) if e["path"].endswith("/files")]
    assert pair.items("partner", number) == []
    pair.world.create_checklist_item("partner", number, {"name": "partner item"}, author=PAVEL)
    pair.run("partner", number)
    assert pair.items("client", copy_) == [("client only", False), ("partner item", False)]


def test_a_lost_registry_adopts_instead_of_duplicating(pair, redis_client):
    number, copy_ = pair.new_partner_task("Registry lost")
    pair.world.create_checklist_item("partner", number, {"name": "Same"}, author=PAVEL)
    pair.world.create_checklist_item("partner", number, {"name": "Same"}, author=PAVEL)
    pair.run("partner", number)
    assert pair.items("client", copy_) == [("Same", False), ("Same", False)]
    # Everything the sync remembers of checklists is lost (the task pair survives, or relink
    # rebuilt it from the markers).
    lost = [key for pattern in ("crosslink:chk:*", "crosslink:*:demo:checklist", "crosslink:idem:demo:checklist:*")
            for key in redis_client.scan_iter(pattern)]
    assert len(lost) >= 4
    redis_client.delete(*lost)
    pair.run("partner", number)
    pair.run("client", copy_)
    assert pair.items("client", copy_) == [("Same", False), ("Same", False)]
    assert pair.items("partner", number) == [("Same", False), ("Same", False)]


def test_a_create_whose_answer_was_lost_is_found_not_repeated(pair, redis_client):
    number, copy_ = pair.new_partner_task("Lost answer")
    item = pair.world.create_checklist_item("partner", number, {"name": "Ship"}, author=PAVEL)
    # As if the create had been sent and its answer lost: the item exists, the key is ambiguous.
    pair.world.create_checklist_item("client", copy_, {"name": "Ship"}, author=1)
    redis_client.set(f"crosslink:idem:demo:checklist:partner:{item}", "ambiguous")
    pair.run("partner", number)
    assert pair.items("client", copy_) == [("Ship", False)]
    assert pair.state.counterpart("checklist", "partner", item) is not None


def test_subitems_keep_their_parent(pair):
    number, copy_ = pair.new_partner_task("Nested")
    top = pair.world.create_checklist_item("partner", number, {"name": "top"}, author=PAVEL)
    pair.world.create_checklist_item("partner", number, {"name": "child", "parent": {"id": top}}, author=PAVEL)
    pair.run("partner", number)
    mirrored = pair.world.list_checklist("client", copy_, {"fields": "id,name,parent"})
    assert mirrored[1]["parent"] == {"id": mirrored[0]["id"]}


def test_a_card_file_is_copied_once_and_never_comes_back(pair):
    number, copy_ = pair.new_partner_task("Files")
    file_id = pair.world.upload_file("partner", "plan.pdf", b"%PDF-1.7 plan", author=PAVEL)
    pair.world.attach_file_to_task("partner", file_id, number, author=PAVEL)
    pair.run("partner", number)
    [copied] = pair.world.task_files("client", copy_, only_description=True)
    assert copied["name"] == "plan.pdf"
    assert pair.world.account("client").files[copied["id"]]["content"] == b"%PDF-1.7 plan"
    pair.run("partner", number)
    pair.run("client", copy_)
    assert len(pair.world.task_files("client", copy_, only_description=True)) == 1
    assert len(pair.world.task_files("partner", number, only_description=True)) == 1
    uploads = [e for e in pair.requests("client") + pair.requests("partner") if e["path"] in ("/file", "/file/")]
    assert len(uploads) == 1
    # A file already on the mirror's card stays: attaching adds, it never replaces the set.
    own = pair.world.upload_file("client", "notes.txt", b"n", author=MARAT)
    pair.world.attach_file_to_task("client", own, copy_, author=MARAT)
    second = pair.world.upload_file("partner", "v2.pdf", b"v2", author=PAVEL)
    pair.world.attach_file_to_task("partner", second, number, author=PAVEL)
    pair.run("partner", number)
    assert [f["name"] for f in pair.world.task_files("client", copy_, only_description=True)] == [
        "plan.pdf", "notes.txt", "v2.pdf"]
    pair.run("client", copy_)
    assert [f["name"] for f in pair.world.task_files("partner", number, only_description=True)] == [
        "plan.pdf", "v2.pdf", "notes.txt"]
    assert pair.check(number, copy_).ok


def test_a_comment_files_copy_attached_to_the_card_is_not_copied_back(pair):
    number, copy_ = pair.new_partner_task("Comment file")
    file_id = pair.world.upload_file("partner", "spec.csv", b"a,b", author=PAVEL)
    pair.world.add_comment("partner", number, {"description": "see", "files": [{"id": file_id}]}, author=PAVEL)
    pair.run("partner", number)
    [comment] = pair.world.list_task_comments("client", copy_, {"fields": "files"})
    copied = comment["files"][0]["id"]
    pair.world.attach_file_to_task("client", copied, copy_, author=MARAT)   # a person pins it to the card
    pair.run("client", copy_)
    uploads = [e for e in pair.requests("partner") if e["path"] in ("/file", "/file/")]
    assert uploads == []


def test_a_tick_undone_while_planfix_held_it_queued_stays_undone(pair):
    """The quick chaos run lost an untick this way: the tick's write was queued (202), the person
    unticked before the next run, which found the item back at its agreed state and wrote
    nothing; the queued tick then landed on the mirror and stood."""
    number, copy_ = pair.new_partner_task("Undone tick")
    item = pair.world.create_checklist_item("partner", number, {"name": "Sign"}, author=PAVEL)
    pair.run("partner", number)
    pair.world.update_checklist_item("partner", number, item, {"isDone": True}, author=PAVEL)
    pair.world.set_faults("client", busy_202=1.0, busy_delay_s=0.3)
    assert any("checklist item" in entry for entry in pair.run("partner", number).queued)
    pair.world.set_faults("client")
    pair.world.update_checklist_item("partner", number, item, {"isDone": False}, author=PAVEL)
    time.sleep(0.8)   # the queued tick lands on the mirror
    assert pair.items("client", copy_) == [("Sign", True)]
    pair.run("client", copy_)   # the tick landing is our echo, not the client's change
    assert pair.items("partner", number) == [("Sign", False)]
    pair.run("partner", number)
    pair.run("client", copy_)
    assert pair.items("partner", number) == [("Sign", False)]
    assert pair.items("client", copy_) == [("Sign", False)]


@given(st.fixed_dictionaries({"name": st.sampled_from(["a", "b"]), "isDone": st.booleans()}),
       st.fixed_dictionaries({"name": st.sampled_from(["a", "b"]), "isDone": st.booleans()}),
       st.lists(st.fixed_dictionaries({"name": st.sampled_from(["a", "b"]), "isDone": st.booleans()}), max_size=3))
def test_queued_writes_leave_both_sides_agreed_values_and_the_landing_is_no_change(agreed, view, writes):
    mirror = dict(agreed)
    for written in writes:
        mirror = queued_on_mirror(mirror, written, view)
        landed = agreed_after_write(agreed, written, view)
        assert {key: mirror[key] for key in ITEM_KEYS} == agreed   # its values do not move
        assert agrees(mirror, landed) and agrees(mirror, agreed)   # neither the old nor the landed is a change
        promoted = seen_echo(mirror, landed)
        assert promoted is None if landed == agreed else {key: promoted[key] for key in ITEM_KEYS} == landed
    source = queued_on_source(agreed, view)
    assert not agrees(source, agreed) and not agrees(source, view)   # the next run writes again ...
    assert item_changes(view, source) == view                         # ... all of it


def test_a_tick_planfix_queued_is_not_carried_back_before_it_applies(pair):
    """A 202 on the mirror's item is not agreed: the mirror's side, still showing the old value,
    must not take it for a change of its own and roll the person's tick back (a chaos finding)."""
    number, copy_ = pair.new_partner_task("Queued tick")
    item = pair.world.create_checklist_item("partner", number, {"name": "Sign"}, author=PAVEL)
    pair.run("partner", number)
    pair.world.update_checklist_item("partner", number, item, {"isDone": True}, author=PAVEL)
    pair.world.set_faults("client", busy_202=1.0, busy_delay_s=0.5)
    report = pair.run("partner", number)
    pair.world.set_faults("client")
    assert any("checklist item" in entry for entry in report.queued)
    assert pair.items("client", copy_) == [("Sign", False)]   # not applied yet
    pair.run("client", copy_)
    assert pair.items("partner", number) == [("Sign", True)]
    time.sleep(1.0)   # Planfix applies the queued change
    assert pair.items("client", copy_) == [("Sign", True)]
    pair.run("client", copy_)
    pair.run("partner", number)
    assert pair.items("partner", number) == [("Sign", True)]
    assert pair.items("client", copy_) == [("Sign", True)]
