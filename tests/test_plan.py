"""The sync plan: create and update bodies, conflicts, statuses and rules, idempotence."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.links import CustomFieldRule, StatusRule, load_links
from workers.canonical import normalise_value
from workers.plan import CLOCK_SKEW_S, created_epoch, older_than_link, plan_task_sync

EXAMPLE = Path(__file__).resolve().parents[1] / "crosslink" / "examples" / "links.yaml"
LINK = load_links(EXAMPLE).links[0]
# The demo link plus the features it does not use: an assignee note field and a value transform.
NOTED = replace(LINK, sides={**LINK.sides, "client": replace(LINK.sides["client"], assignee_note_field=202)})
UNNOTED = replace(LINK, sides={**LINK.sides, "client": replace(LINK.sides["client"], assignee_note_field=None)})
TRANSFORMED = replace(NOTED, fields=replace(LINK.fields, custom=(
    LINK.fields.custom[0], CustomFieldRule(101, 201, "both", None, {"mail": "email", "phone": "call"}))))
REGISTRY = {("partner", 4): 40, ("client", 40): 4}


def counterpart(side: str, number: int) -> int | None:
    return REGISTRY.get((side, number))


def view(side: str, **values: Any) -> dict[str, Any]:
    base = {"name": "Task", "description": "", "priority": "NotUrgent", "start_date": None, "end_date": None,
            "status": 1 if side == "partner" else 11, "assignees": [], "parent": None}
    ids = (100, 101) if side == "partner" else (200, 201, 202)
    base.update({f"cf:{i}": None for i in ids})
    base.update({key.replace("cf_", "cf:"): value for key, value in values.items()})
    return base


def apply(target: dict[str, Any], plan) -> dict[str, Any]:
    """What the target's canonical view becomes once PLAN is written (a model of Planfix writes)."""
    after = dict(target)
    body = plan.update_body
    for key in ("name", "description", "priority"):
        if key in body:
            after[key] = body[key]
    for key, write, has in (("start_date", "startDateTime", "hasStartDate"), ("end_date", "endDateTime", "hasEndDate")):
        if write in body:
            after[key] = body[write]
        if body.get(has) is False:
            after[key] = None
    if "parent" in body:
        after["parent"] = body["parent"]["id"] or None
    if "assignees" in body:
        after["assignees"] = sorted(person["id"] for person in body["assignees"]["users"])
    for entry in body.get("customFieldData", []):
        after[f"cf:{entry['field']['id']}"] = normalise_value(entry["value"])
    if plan.status_path:
        after["status"] = plan.status_path[-1]
    return after


def test_create_puts_everything_mapped_into_the_body():
    source = view("partner", name="Kick-off", description="<p>Plan</p>", priority="Urgent",
                  start_date="01-02-2024 10:00", status=3, assignees=["user:4", "user:3"], parent=4,
                  cf_100=1500, cf_101="mail")
    plan = plan_task_sync(TRANSFORMED, "partner", source, None, None, None, counterpart, {"user:3": "Olga"})
    assert plan.create and not plan.is_noop
    assert plan.update_body == {
        "name": "Kick-off", "description": "<p>Plan</p>", "priority": "Urgent", "startDateTime": "01-02-2024 10:00",
        "parent": {"id": 40}, "assignees": {"users": [{"id": "user:5"}]},
        "customFieldData": [{"field": {"id": 202}, "value": "Olga"}, {"field": {"id": 200}, "value": 1500},
                            {"field": {"id": 201}, "value": "email"}],
        "processId": 3, "project": {"id": 20},
    }
    assert "status" not in plan.update_body
    assert plan.status_path == (12, 13)  # from the client's initial 11, through the allowed moves
    # The client's note field names Olga on the card: no note comment repeats it.
    assert plan.notes == () and plan.parked == ()


def test_create_leaves_out_empty_values_and_parks_an_unmirrored_parent():
    plan = plan_task_sync(LINK, "client", view("client", parent=99), None, None, None, counterpart, {})
    assert plan.update_body == {"name": "Task", "priority": "NotUrgent", "processId": 1, "project": {"id": 10}}
    assert plan.status_path == () and plan.notes == ()
    assert len(plan.parked) == 1 and "parent #99" in plan.parked[0]


def test_update_carries_only_what_the_source_changed():
    before = view("partner", name="Old", status=2, cf_100=1)
    now = view("partner", name="New", status=2, cf_100=1)
    target = view("client", name="Old", status=12, cf_200=1, description="client's own text")
    target_snapshot = view("client", name="Old", status=12, cf_200=1)
    plan = plan_task_sync(LINK, "partner", now, before, target, target_snapshot, counterpart, {})
    assert plan.update_body == {"name": "New"} and plan.fields == ("name",)
    assert plan.status_path == () and not plan.create


def test_target_only_changes_are_left_for_the_target_to_carry():
    source = view("partner", name="Same")
    target = view("client", name="Renamed by client")
    plan = plan_task_sync(LINK, "partner", source, source, target, view("client", name="Same"), counterpart, {})
    assert plan.is_noop and plan.update_body == {}


def test_conflicts_owner_wins_and_last_event_wins_without_owner():
    before_p, before_c = view("partner"), view("client")
    now_p = view("partner", name="P name", description="P text", priority="Urgent")
    now_c = view("client", name="C name", description="C text", priority="NotUrgent", start_date="01-01-2024 00:00")
    from_partner = plan_task_sync(LINK, "partner", now_p, before_p, now_c, before_c, counterpart, {})
    # name: owner partner -> written; description: owner client -> not; priority: no owner -> source wins
    assert from_partner.update_body == {"name": "P name", "priority": "Urgent"}
    from_client = plan_task_sync(LINK, "client", now_c, before_c, now_p, before_p, counterpart, {})
    # the client did not touch the priority (NotUrgent before and now): nothing to carry there
    assert from_client.update_body == {"description": "C text", "startDateTime": "01-01-2024 00:00"}
    # What each write replaces of the other side's own edit, with the rule: told on that side.
    assert from_partner.overwritten == (("name", "C name", "partner"),)
    dated_p, dated_c = view("partner", start_date="02-02-2024 00:00"), view("client", start_date="01-01-2024 00:00")
    assert plan_task_sync(LINK, "client", dated_c, before_c, dated_p, before_p, counterpart, {}).overwritten == (
        ("start_date", "02-02-2024 00:00", None),)
    assert from_client.overwritten == (("description", "P text", "client"),)
    # ... and what each side's own edit loses to the other's, told by whichever run comes first.
    assert from_partner.yielded == (("description", "P text", "client"),)
    assert from_client.yielded == (("name", "C name", "partner"),)
    # An edit of one side alone replaces nobody's.
    assert plan_task_sync(LINK, "partner", now_p, before_p, before_c, before_c, counterpart, {}).overwritten == ()


def test_one_way_custom_field_and_clearing_values():
    before = view("client", cf_201="call", cf_200=5, start_date="01-01-2024 00:00", parent=40)
    now = view("client", cf_201="email", cf_200=None, start_date=None, parent=None)
    target = view("partner", cf_101="phone", cf_100=5, start_date="01-01-2024 00:00", parent=4)
    plan = plan_task_sync(LINK, "client", now, before, target, target, counterpart, {})
    # 201 flows partner -> client only; 200 cleared; date cleared; parent detached
    assert plan.update_body == {"hasStartDate": False, "parent": {"id": 0},
                                "customFieldData": [{"field": {"id": 100}, "value": None}]}


def test_status_moves_follow_the_graph_and_rules():
    before, now = view("partner", status=1), view("partner", status=4)
    plan = plan_task_sync(LINK, "partner", now, before, view("client", status=11), view("client", status=11),
                          counterpart, {})
    assert plan.status_path == (12, 14) and plan.update_body == {}
    # client reaching 14: the partner goes to 4 (map), and the rule asks for 4 too: one move only
    plan = plan_task_sync(LINK, "client", view("client", status=14), view("client", status=13),
                          view("partner", status=3), view("partner", status=3), counterpart, {})
    assert plan.status_path == (4,) and plan.source_status_moves == ()


def test_rules_that_move_the_source_pull_the_target_along():
    link = replace(LINK, statuses=replace(LINK.statuses, rules=(StatusRule("partner", 3, "partner", 4),)))
    plan = plan_task_sync(link, "partner", view("partner", status=3), view("partner", status=2),
                          view("client", status=12), view("client", status=12), counterpart, {})
    assert plan.source_status_moves == (("partner", 4),)
    assert plan.status_path == (13, 12, 14)  # to 13 for Review, then on to 14 for Closed


def test_cycling_rules_stop():
    rules = (StatusRule("partner", 3, "partner", 4), StatusRule("partner", 4, "partner", 3))
    link = replace(LINK, statuses=replace(LINK.statuses, rules=rules, transitions={}))
    plan = plan_task_sync(link, "partner", view("partner", status=3), view("partner", status=2),
                          view("client", status=12), view("client", status=12), counterpart, {})
    assert plan.source_status_moves == (("partner", 4), ("partner", 3))


def test_unmapped_status_parks_but_fields_still_go():
    plan = plan_task_sync(LINK, "partner", view("partner", status=9, name="N"), view("partner", status=1),
                          view("client"), view("client"), counterpart, {})
    assert plan.update_body == {"name": "N"} and plan.status_path == ()
    assert plan.parked and "status 9" in plan.parked[0]


def test_stand_in_keeps_the_targets_unpaired_people():
    # partner user:2 stands for unpaired client people: client user:6 stays next to user:5
    plan = plan_task_sync(LINK, "partner", view("partner", assignees=["user:2", "user:4"]),
                          view("partner", assignees=["user:2"]), view("client", assignees=["user:6"]),
                          view("client", assignees=["user:6"]), counterpart, {})
    assert plan.update_body == {"assignees": {"users": [{"id": "user:5"}, {"id": "user:6"}]}}
    assert plan.notes == ()


def test_a_new_mirror_of_the_stand_ins_own_task_gets_a_representative():
    plan = plan_task_sync(UNNOTED, "partner", view("partner", assignees=["user:2"]), None, None, None, counterpart,
                          {"user:2": "Pavel"})
    assert plan.update_body["assignees"] == {"users": [{"id": "user:5"}]} and "Pavel" in plan.notes[0]


def test_a_note_field_on_the_target_replaces_the_note_comment():
    plan = plan_task_sync(NOTED, "partner", view("partner", assignees=["user:2"]), None, None, None, counterpart,
                          {"user:2": "Pavel"})
    assert plan.update_body["assignees"] == {"users": [{"id": "user:5"}]} and plan.notes == ()
    assert {"field": {"id": 202}, "value": "Pavel"} in plan.update_body["customFieldData"]


def test_assignee_note_field_is_cleared_when_everyone_is_paired():
    plan = plan_task_sync(NOTED, "partner", view("partner", assignees=["user:4"]), view("partner", assignees=["user:3"]),
                          view("client", assignees=["user:5"], cf_202="Olga"),
                          view("client", assignees=["user:5"], cf_202="Olga"), counterpart, {})
    assert plan.update_body == {"customFieldData": [{"field": {"id": 202}, "value": None}]}


# --- properties -------------------------------------------------------------------------------

people = st.lists(st.sampled_from(["user:1", "user:2", "user:3", "user:4", "user:5", "user:6", "user:40"]),
                  unique=True, max_size=4)
dates = st.one_of(st.none(), st.sampled_from(["01-01-2024 00:00", "15-06-2025 13:45"]))


@st.composite
def source_views(draw, side):
    statuses = (1, 2, 3, 4) if side == "partner" else (11, 12, 13, 14)
    values = {"name": draw(st.text(min_size=1, max_size=8)), "description": draw(st.text(max_size=8)),
              "priority": draw(st.sampled_from(["Urgent", "NotUrgent"])), "start_date": draw(dates),
              "end_date": draw(dates), "status": draw(st.sampled_from(statuses)), "assignees": sorted(draw(people)),
              "parent": draw(st.sampled_from([None, 4 if side == "partner" else 40]))}
    for field_id in ((100, 101) if side == "partner" else (200, 201)):
        values[f"cf_{field_id}"] = draw(st.one_of(st.none(), st.integers(0, 9), st.sampled_from(["mail", "phone", "email", "call"])))
    return view(side, **values)


@settings(max_examples=250, deadline=None)
@given(st.sampled_from([LINK, NOTED, TRANSFORMED]), st.sampled_from(["partner", "client"]), st.data())
def test_once_applied_a_plan_plans_nothing_more(link, side, data):
    source = data.draw(source_views(side))
    other = link.other(side)
    names = {"user:3": "Olga", "user:40": "Ivan"}
    created = plan_task_sync(link, side, source, None, None, None, counterpart, names)
    target = apply(view(other, name="", status=link.sides[other].create.initial_status), created)
    # identical sides: never synced before, yet nothing left to write
    again = plan_task_sync(link, side, source, None, target, None, counterpart, names)
    assert again.is_noop, again
    # and with the snapshots the sync saves after a run
    assert plan_task_sync(link, side, source, source, target, target, counterpart, names).is_noop


@settings(max_examples=250, deadline=None)
@given(st.sampled_from(["partner", "client"]), st.data())
def test_an_update_plan_applied_converges(side, data):
    """Once applied, an update plan leaves nothing to write, also where writes Planfix queued are
    still to land on the target (LANDING: some keys of another view), as the plan's land after them."""
    other = LINK.other(side)
    before, now = data.draw(source_views(side)), data.draw(source_views(side))
    target, queued = data.draw(source_views(other)), data.draw(source_views(other))
    keys = sorted(key for key in queued if key in ("name", "status") or key.startswith("cf:"))
    landing = {key: queued[key] for key in data.draw(st.sets(st.sampled_from(keys)))}
    plan = plan_task_sync(LINK, side, now, before, target, target, counterpart, {}, landing=landing)
    assert "status" not in plan.update_body
    assert all(step in LINK.statuses.forward(other) for step in plan.status_path)  # target-side ids only
    after = apply({**target, **landing}, plan)
    replan = plan_task_sync(LINK, side, now, before, after, target, counterpart, {})
    assert replan.update_body == {} and (replan.status_path == () or plan.parked)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_owner_always_wins_in_the_plan(data):
    before_p, before_c = data.draw(source_views("partner")), data.draw(source_views("client"))
    now_p = dict(before_p, name=before_p["name"] + "P")
    now_c = dict(before_c, name=before_c["name"] + "C")
    # the name is owned by the partner: from either side, only the partner's name is ever written
    from_client = plan_task_sync(LINK, "client", now_c, before_c, now_p, before_p, counterpart, {})
    from_partner = plan_task_sync(LINK, "partner", now_p, before_p, now_c, before_c, counterpart, {})
    assert "name" not in from_client.update_body
    assert from_partner.update_body.get("name") == now_p["name"]


def test_a_move_is_planned_from_where_a_queued_move_will_leave_the_target():
    """The copy shows 12, and Planfix holds a move to 13 queued (202): a source at 2 (the client's
    12) still needs its move, sent to land after the 13; a source at 3 (13) needs none beyond
    what is queued, unless the copy shows something else, as a queued write is known to land
    only once seen."""
    before, target = view("partner", status=3), view("client", status=12)
    plan = plan_task_sync(LINK, "partner", view("partner", status=2), before, target, target, counterpart, {},
                          landing={"status": 13})
    assert plan.status_path == (12,)
    assert plan_task_sync(LINK, "partner", view("partner", status=2), before, target, target, counterpart,
                          {}).is_noop
    plan = plan_task_sync(LINK, "partner", view("partner", status=3), view("partner", status=2), target, target,
                          counterpart, {}, landing={"status": 13})
    assert plan.status_path == (13,)
    plan = plan_task_sync(LINK, "partner", view("partner", name="New"), view("partner"), view("client", name="Old"),
                          view("client", name="Old"), counterpart, {}, landing={"name": "Older"})
    assert plan.update_body == {"name": "New"}
    plan = plan_task_sync(LINK, "partner", view("partner", name="New"), view("partner"), view("client", name="New"),
                          view("client", name="Old"), counterpart, {}, landing={"name": "Older"})
    assert plan.update_body == {"name": "New"}


# -- tasks older than the link -------------------------------------------------------------------

def point(epoch: float) -> dict[str, str]:
    return {"dateTimeUtcSeconds": time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime(epoch))}


def test_a_task_is_older_than_the_link_only_when_both_times_are_known_and_beyond_the_skew():
    since = 1_800_000_000.0
    assert created_epoch({"dateTime": point(since)}) == since
    assert created_epoch({"dateTime": {"date": "01-01-2027", "time": "10:00"}}) is None  # no seconds: unknown
    assert created_epoch({"dateTime": {"dateTimeUtcSeconds": "yesterday"}}) is None
    assert created_epoch({}) is None
    assert older_than_link(since - CLOCK_SKEW_S - 1, since)
    assert not older_than_link(since - CLOCK_SKEW_S, since)  # Planfix's clock may run behind ours
    assert not older_than_link(None, since) and not older_than_link(since - 86400, None)


@given(created=st.integers(1_700_000_000, 1_900_000_000), since=st.integers(1_700_000_000, 1_900_000_000))
def test_older_than_the_link_is_monotone_in_both_times(created, since):
    older = older_than_link(created_epoch({"dateTime": point(created)}), float(since))
    assert older == (created < since - CLOCK_SKEW_S)
    if older:
        assert older_than_link(float(created - 1), float(since)) and older_than_link(float(created), float(since + 1))


def test_a_move_the_target_does_not_allow_is_held_with_what_each_side_shows():
    # The partner reopens (4 -> 1); the client's copy is Delivered (14), from which its process
    # has no way back to Submitted (11).
    plan = plan_task_sync(LINK, "partner", view("partner", status=1), view("partner", status=4),
                          view("client", status=14), view("client", status=14), counterpart, {})
    assert plan.status_path == () and plan.held_status is not None
    assert plan.held_status[:2] == (1, 14) and "no allowed path" in plan.held_status[2]
    # An unmapped status is held too; a move the target can follow is not.
    assert plan_task_sync(LINK, "partner", view("partner", status=9), view("partner", status=1),
                          view("client"), view("client"), counterpart, {}).held_status[:2] == (9, 11)
    assert plan_task_sync(LINK, "partner", view("partner", status=2), view("partner", status=4),
                          view("client", status=14), view("client", status=14), counterpart, {}).held_status is None
