"""crosslink.lab.oracle: the expected state of both accounts from what people did, and the verdict.

The chaos suite's verdict is only as good as its oracle, so the oracle is tested on its own with
the example link's rules: each rule it applies (owner, status map and rules, delegation, comment
policy, withdrawn mirrors), each way a dump can be wrong (absent, different, twice, echoed,
leaked), and, with hypothesis, that a dump built to match any well-formed record passes and
that removing or doubling any one thing in it is seen.
"""

from __future__ import annotations

import copy
import hashlib

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crosslink.lab.demo import example
from crosslink.lab.oracle import (
    CHECKLIST_ADD,
    CHECKLIST_TICK,
    COMMENT,
    COMMENT_DELETE,
    COMMENT_EDIT,
    CONTEST,
    CREATE,
    DUPLICATE,
    EDIT,
    FILE,
    LOST,
    REASSIGN,
    STATUS,
    UNEXPECTED,
    Action,
    Ambiguous,
    delegated,
    depends_on_counterpart,
    expect,
    judge,
    settle_statuses,
)
from schemas.links import parse_links
from workers.comment_policy import render_mirror, render_withdrawn

LINK = parse_links(yaml.safe_dump(example("links.yaml"))).links[0]
NAMES = {"partner": {"user:2": "Pavel Lead", "user:3": "Olga Developer", "user:4": "Irina Manager"},
         "client": {"user:5": "Irina Manager", "user:6": "Marat Analyst"}}
PROJECT = {"partner": 10, "client": 20}


def act(t, side, kind, task, author=None, **values):
    return Action(float(t), side, author or ("user:3" if side == "partner" else "user:6"), kind, task, values)


def create(t, side, key, assignees=None, status=None):
    return act(t, side, CREATE, key, name=f"[{key}] task", description="made",
               status=status or (1 if side == "partner" else 11),
               assignees=assignees or (["user:3"] if side == "partner" else ["user:6"]))


# --- a dump that matches, built the way the sync would leave it ------------------------------

def perfect_dumps(expected, *, withdrawn_mirror_for_unsynced=True):
    """Both sides' tasks exactly as EXPECTED says, mirrors rendered by the product's own policy."""
    dumps = {"partner": [], "client": []}
    numbers = {"partner": 100, "client": 100}
    for key, want in expected.items():
        tasks = {}
        for side in ("partner", "client"):
            numbers[side] += 1
            fields = want.fields[side]
            tasks[side] = {"id": numbers[side], "name": fields["name"], "description": fields["description"],
                           "status": {"id": fields["status"]}, "project": {"id": PROJECT[side]},
                           "assignees": {"users": [{"id": person} for person in fields["assignees"]]},
                           "comments": [], "checklist": [], "files": []}
        for comment in want.comments.values():
            other = LINK.other(comment.side)
            tasks[comment.side]["comments"].append({"description": comment.text, "isDeleted": comment.deleted,
                                                    "owner": {"id": comment.author}})
            if comment.mirrored:
                # Every version the person wrote crossed: the earlier ones folded below the last.
                earlier = [(old, f"05-12-2026 10:0{n}") for n, old in enumerate(comment.texts[:-1])]
                text = render_mirror(LINK, comment.side, NAMES[comment.side][comment.author], "05-12-2026 10:00",
                                     comment.text, earlier)
                if comment.deleted:
                    if not withdrawn_mirror_for_unsynced:
                        continue
                    text = render_withdrawn(LINK, comment.side, text, "05-12-2026 10:01")
                tasks[other]["comments"].append({"description": text, "isDeleted": False,
                                                 "owner": {"id": "user:1"}})
        for item in want.checklist.values():
            for side in tasks:
                tasks[side]["checklist"].append({"name": item["name"], "isDone": item["done"]})
        for name, stored in want.files.items():
            for side in tasks:
                tasks[side]["files"].append({"name": name, "sha256": stored["sha256"]})
        for side in tasks:
            dumps[side].append(tasks[side])
    return dumps


def verdict_of(actions, dumps=None, mutate=None):
    expected = expect(LINK, actions)
    dumps = dumps or perfect_dumps(expected)
    if mutate:
        mutate(dumps)
    scope = {side: (lambda task, side=side: (task.get("project") or {}).get("id") == PROJECT[side])
             for side in ("partner", "client")}
    return judge(LINK, expected, dumps, NAMES, scope=scope)


def kinds(verdict):
    return sorted((finding.kind, finding.side, finding.what) for finding in verdict.findings)


# --- the rules --------------------------------------------------------------------------------

def test_a_created_task_is_expected_on_both_sides_with_mapped_status_and_delegated_assignees():
    expected = expect(LINK, [create(1, "partner", "T1", assignees=["user:3"])])
    assert expected["T1"].fields == {
        "partner": {"name": "[T1] task", "description": "made", "status": 1, "assignees": ["user:3"]},
        "client": {"name": "[T1] task", "description": "made", "status": 11, "assignees": ["user:5"]}}
    assert verdict_of([create(1, "partner", "T1")]).ok


@pytest.mark.parametrize("side, status, partner, client", [
    ("partner", 2, 2, 12), ("partner", 3, 3, 13), ("partner", 4, 4, 14),
    ("client", 12, 2, 12), ("client", 13, 3, 13), ("client", 15, 4, 15),
    ("client", 14, 4, 14),  # the link's rule (client 14 -> partner 4) agrees with the map
])
def test_status_follows_the_map_and_the_rules(side, status, partner, client):
    assert settle_statuses(LINK, side, status) == {"partner": partner, "client": client}
    expected = expect(LINK, [create(1, side, "T1"), act(2, side, STATUS, "T1", status=status)])
    assert (expected["T1"].fields["partner"]["status"], expected["T1"].fields["client"]["status"]) == (partner, client)


def test_a_rule_that_moves_the_other_side_is_applied():
    link = copy.deepcopy(LINK)
    rules = link.statuses.rules
    assert rules and (rules[0].when_side, rules[0].when_status, rules[0].then_side, rules[0].then_status) == (
        "client", 14, "partner", 4)
    doc = example("links.yaml")
    doc["links"][0]["statuses"]["rules"] = [{"when": {"side": "partner", "status": 3}, "then": {"side": "client", "status": 14}}]
    ruled = parse_links(yaml.safe_dump(doc)).links[0]
    assert settle_statuses(ruled, "partner", 3) == {"partner": 3, "client": 14}


@pytest.mark.parametrize("field, winner", [("name", "partner"), ("description", "client")])
def test_a_contest_goes_to_the_fields_owner(field, winner):
    values = {"partner": f"[T1] partner {field}", "client": f"[T1] client {field}"}
    expected = expect(LINK, [create(1, "client", "T1"), act(2, "partner", CONTEST, "T1", field=field, values=values)])
    assert expected["T1"].fields["partner"][field] == expected["T1"].fields["client"][field] == values[winner]


def test_the_loser_of_a_contest_left_standing_is_lost():
    values = {"partner": "[T1] partner's", "client": "[T1] client's"}
    actions = [create(1, "client", "T1"), act(2, "client", CONTEST, "T1", field="name", values=values)]

    def client_won(dumps):
        for side in dumps:
            dumps[side][0]["name"] = values["client"]
    found = verdict_of(actions, mutate=client_won)
    # The copies still carry the key, so they are found; both hold the wrong winner.
    assert kinds(found) == [(LOST, "client", "name"), (LOST, "partner", "name")]


@pytest.mark.parametrize("side, assignees, other", [
    ("partner", ["user:3"], ["user:5"]),            # represented by the client-side stand-in
    ("partner", ["user:4"], ["user:5"]),            # paired
    ("partner", ["user:3", "user:4"], ["user:5"]),
    ("client", ["user:6"], ["user:2"]),             # represented by the partner lead
    ("client", ["user:5"], ["user:4"]),             # paired (and the stand-in: only at creation)
])
def test_reassignment_is_delegated(side, assignees, other):
    assert delegated(LINK, side, assignees) == other
    created = expect(LINK, [create(1, side, "T1", assignees=assignees)])
    assert created["T1"].fields[LINK.other(side)]["assignees"] == other
    if not depends_on_counterpart(LINK, side, assignees):
        expected = expect(LINK, [create(1, side, "T1"), act(2, side, REASSIGN, "T1", assignees=assignees)])
        assert expected["T1"].fields[LINK.other(side)]["assignees"] == other


def test_an_edit_carries_and_a_rolled_back_edit_is_lost_on_both_sides():
    actions = [create(1, "partner", "T1"), act(2, "partner", EDIT, "T1", field="description", value="new text")]
    assert verdict_of(actions).ok

    def rolled_back(dumps):
        for side in dumps:
            dumps[side][0]["description"] = "made"
    assert kinds(verdict_of(actions, mutate=rolled_back)) == [(LOST, "client", "description"),
                                                             (LOST, "partner", "description")]


@pytest.mark.parametrize("actions, words", [
    ([create(1, "partner", "T1"), act(2, "client", EDIT, "T1", field="name", value="[T1] x")], "not its origin"),
    ([create(1, "partner", "T1"), act(2, "client", STATUS, "T1", status=12)], "not its origin"),
    ([create(1, "partner", "T1"),
      act(2, "partner", CONTEST, "T1", field="name", values={"partner": "a", "client": "b"}),
      act(3, "partner", EDIT, "T1", field="name", value="c")], "after a contest"),
    ([create(1, "partner", "T1"),
      act(2, "partner", CONTEST, "T1", field="priority", values={"partner": "a", "client": "b"})], "no owner"),
    ([create(1, "partner", "T1"), act(2, "partner", REASSIGN, "T1", assignees=["user:2"])], "stand-in"),
    ([create(1, "client", "T1"), act(2, "client", REASSIGN, "T1", assignees=["user:5", "user:6"])], "stand-in"),
    ([create(1, "partner", "T1"), act(2, "partner", COMMENT, "T1", comment="C1", text="[C1] hi"),
      act(3, "partner", COMMENT_EDIT, "T1", comment="C1", text="#internal [C1] hi")], "comment policy"),
    ([create(1, "partner", "T1"), act(2, "partner", COMMENT, "T1", comment="C1", text="[C1] hi"),
      act(3, "client", COMMENT_DELETE, "T1", comment="C1")], "does not hold"),
    ([create(1, "partner", "T1"), act(2, "partner", CHECKLIST_ADD, "T1", item="K1", name="[K1] i"),
      act(3, "client", CHECKLIST_TICK, "T1", item="K1", done=True)], "not added on"),
    ([act(1, "partner", STATUS, "T9", status=2)], "before it was created"),
    ([create(1, "partner", "T1"), create(2, "client", "T1")], "created twice"),
])
def test_records_without_a_well_defined_outcome_are_refused(actions, words):
    with pytest.raises(Ambiguous, match=words):
        expect(LINK, actions)


def test_the_stand_in_is_what_makes_delegation_depend_on_the_counterpart():
    assert depends_on_counterpart(LINK, "partner", ["user:2"])       # the partner lead stands for client people
    assert depends_on_counterpart(LINK, "client", ["user:5"])        # Irina stands for partner people
    assert not depends_on_counterpart(LINK, "partner", ["user:3", "user:4"])
    assert not depends_on_counterpart(LINK, "client", ["user:6"])


# --- the verdict ------------------------------------------------------------------------------

COMMENTED = [create(1, "partner", "T1"),
             act(2, "client", COMMENT, "T1", comment="C1", text="[C1] from the client"),
             act(3, "partner", COMMENT, "T1", comment="C2", text="#internal [C2] ours only"),
             act(4, "client", COMMENT_EDIT, "T1", comment="C1", text="[C1] edited"),
             act(5, "partner", COMMENT, "T1", author="user:4", comment="C3", text="[C3] withdrawn later"),
             act(6, "partner", COMMENT_DELETE, "T1", comment="C3")]


def test_comments_mirrored_once_with_final_text_author_and_withdrawal_pass():
    verdict = verdict_of(COMMENTED)
    assert verdict.ok, [str(finding) for finding in verdict.findings]
    assert verdict.comments == 3


def test_a_deleted_comment_never_mirrored_is_not_lost():
    expected = expect(LINK, COMMENTED)
    assert verdict_of(COMMENTED, dumps=perfect_dumps(expected, withdrawn_mirror_for_unsynced=False)).ok


def mirror_of(dumps, key):
    return next(comment for task in dumps["partner"] + dumps["client"] for comment in task["comments"]
                if f"[{key}]" in comment["description"] and "crosslink:mirror" in comment["description"])


@pytest.mark.parametrize("mutate, found", [
    (lambda d: d["partner"][0]["comments"].remove(mirror_of(d, "C1")), [(LOST, "partner", "mirror of C1")]),
    (lambda d: mirror_of(d, "C1").update(description=mirror_of(d, "C1")["description"].replace("edited", "from the client")),
     [(LOST, "partner", "mirror of C1")]),
    (lambda d: mirror_of(d, "C1").update(description=mirror_of(d, "C1")["description"].replace("Marat Analyst", "Sync Bot")),
     [(LOST, "partner", "mirror of C1")]),
    (lambda d: mirror_of(d, "C1").update(isDeleted=True), [(LOST, "partner", "mirror of C1")]),
    (lambda d: mirror_of(d, "C3").update(description=mirror_of(d, "C3")["description"].replace("crosslink:withdrawn", "")),
     [(LOST, "client", "mirror of C3")]),
    (lambda d: d["partner"][0]["comments"].append(dict(mirror_of(d, "C1"))), [(DUPLICATE, "partner", "mirror of C1")]),
    (lambda d: d["client"][0]["comments"].append({"description": "<!--crosslink:mirror-->#internal [C2] ours only"}),
     [(UNEXPECTED, "client", "mirror of C2")]),
    (lambda d: d["client"][0]["comments"].append({"description": "<!--crosslink:mirror-->[C1] edited"}),
     [(UNEXPECTED, "client", "mirror of C1")]),
    (lambda d: d["partner"][0]["comments"].append({"description": "[C1] edited"}), [(UNEXPECTED, "partner", "copy of C1")]),
    (lambda d: d["client"][0]["comments"][0].update(description="[C1] from the client"), [(LOST, "client", "comment C1")]),
    # the client's original gone; C3's withdrawn mirror may be absent (deleted before any sync)
    (lambda d: d["client"][0]["comments"].clear(), [(LOST, "client", "comment C1")]),
])
def test_every_way_a_comment_can_be_wrong_is_seen(mutate, found):
    verdict = verdict_of(COMMENTED, mutate=mutate)
    assert kinds(verdict) == sorted(found), [str(finding) for finding in verdict.findings]


EDITED = [create(1, "partner", "T1"),
          act(2, "client", COMMENT, "T1", comment="C1", text="[C1] first"),
          act(3, "client", COMMENT_EDIT, "T1", comment="C1", text="[C1] second"),
          act(4, "client", COMMENT_EDIT, "T1", comment="C1", text="[C1] third"),
          act(5, "client", COMMENT_EDIT, "T1", comment="C1", text="[C1] final")]


def with_versions(current, *earlier):
    """A dump mutation: C1's mirror showing CURRENT, with EARLIER folded below it (oldest first)."""
    def mutate(dumps):
        mirror_of(dumps, "C1")["description"] = render_mirror(
            LINK, "client", "Marat Analyst", "05-12-2026 10:00", current,
            [(text, f"05-12-2026 10:0{n}") for n, text in enumerate(earlier)])
    return mutate


@pytest.mark.parametrize("current, earlier", [
    ("[C1] final", ["[C1] first", "[C1] second", "[C1] third"]),  # every version
    ("[C1] final", ["[C1] first", "[C1] third"]),                 # one the sync never saw
    ("[C1] final", ["[C1] second"]),
    ("[C1] final", []),                                           # only ever saw the last
])
def test_a_mirror_may_fold_any_earlier_versions_in_the_order_they_were_written(current, earlier):
    verdict = verdict_of(EDITED, mutate=with_versions(current, *earlier))
    assert verdict.ok, [str(finding) for finding in verdict.findings]


@pytest.mark.parametrize("current, earlier, found", [
    # out of order: the newer folded deeper than the older
    ("[C1] final", ["[C1] third", "[C1] first"], [(LOST, "partner", "mirror of C1")]),
    # one version twice
    ("[C1] final", ["[C1] first", "[C1] first"], [(LOST, "partner", "mirror of C1")]),
    # the final text folded as an earlier version of itself
    ("[C1] final", ["[C1] second", "[C1] final"], [(LOST, "partner", "mirror of C1")]),
    # the final text only below, an older one on top
    ("[C1] third", ["[C1] first", "[C1] final"], [(LOST, "partner", "mirror of C1")]),
    # a version no person wrote
    ("[C1] final", ["[C1] first", "[C1] made up"], [(UNEXPECTED, "partner", "mirror of C1")]),
])
def test_a_mirror_whose_earlier_versions_are_invented_or_out_of_order_is_judged(current, earlier, found):
    verdict = verdict_of(EDITED, mutate=with_versions(current, *earlier))
    assert kinds(verdict) == found, [str(finding) for finding in verdict.findings]


def test_a_mirror_on_a_duplicate_task_counts_the_task_twice_and_the_mirror_as_misplaced():
    def duplicated(dumps):
        copy_ = copy.deepcopy(dumps["partner"][0])
        copy_["id"] = 999
        dumps["partner"][0]["comments"] = [c for c in dumps["partner"][0]["comments"] if "[C1]" not in c["description"]]
        copy_["comments"] = [c for c in copy_["comments"] if "[C1]" in c["description"]]
        dumps["partner"].append(copy_)
    verdict = verdict_of(COMMENTED, mutate=duplicated)
    assert (DUPLICATE, "partner", "task") in kinds(verdict)
    assert (LOST, "partner", "mirror of C1") in kinds(verdict)  # on #999, not on the copy #101


def test_tasks_are_found_by_content_never_by_markers():
    def markers_lie(dumps):
        for side in dumps:
            dumps[side][0]["sourceDataVersion"] = "crosslink:v1:other:partner:77"
    assert verdict_of([create(1, "partner", "T1")], mutate=markers_lie).ok

    def renamed(dumps):
        dumps["client"][0]["name"] = "no key any more"
    verdict = verdict_of([create(1, "partner", "T1")], mutate=renamed)
    assert kinds(verdict) == [(LOST, "client", "task"), (UNEXPECTED, "client", "task")]


def test_a_task_twice_on_one_side_is_one_duplicate_per_extra_copy():
    def tripled(dumps):
        for number in (501, 502):
            dumps["client"].append({**copy.deepcopy(dumps["client"][0]), "id": number})
    verdict = verdict_of([create(1, "partner", "T1")], mutate=tripled)
    assert verdict.duplicates == 2 and verdict.lost == 0


LISTED = [create(1, "client", "T1"),
          act(2, "client", CHECKLIST_ADD, "T1", item="K1", name="[K1] step"),
          act(3, "partner", CHECKLIST_ADD, "T1", item="K2", name="[K2] other step"),
          act(4, "client", CHECKLIST_TICK, "T1", item="K1", done=True),
          act(5, "partner", FILE, "T1", file="F1-a.txt", sha256=hashlib.sha256(b"a").hexdigest())]


@pytest.mark.parametrize("mutate, found", [
    (lambda d: d["partner"][0]["checklist"].pop(0), [(LOST, "partner", "item K1")]),
    (lambda d: d["partner"][0]["checklist"][0].update(isDone=False), [(LOST, "partner", "item K1")]),
    (lambda d: d["client"][0]["checklist"].append({"name": "[K2] other step", "isDone": False}),
     [(DUPLICATE, "client", "item K2")]),
    (lambda d: d["client"][0]["files"].clear(), [(LOST, "client", "file F1-a.txt")]),
    (lambda d: d["client"][0]["files"][0].update(sha256="0" * 64), [(LOST, "client", "file F1-a.txt")]),
    (lambda d: d["client"][0]["files"].append(dict(d["client"][0]["files"][0])), [(DUPLICATE, "client", "file F1-a.txt")]),
])
def test_checklist_items_and_files_once_each_as_left(mutate, found):
    assert verdict_of(LISTED).ok
    assert kinds(verdict_of(LISTED, mutate=mutate)) == found


# --- any well-formed record -------------------------------------------------------------------

@st.composite
def records(draw):
    """A random record that keeps to the rules expect() states, as the chaos generator does."""
    actions, t = [], 0.0
    tasks: dict[str, str] = {}
    comments: dict[str, tuple[str, str, bool]] = {}
    items: dict[str, tuple[str, str]] = {}
    contested: dict[str, set] = {}
    statuses: dict[str, int] = {}
    for step in range(draw(st.integers(1, 25))):
        t += 1
        kind = draw(st.sampled_from([CREATE, EDIT, CONTEST, STATUS, REASSIGN, COMMENT, COMMENT_EDIT,
                                     COMMENT_DELETE, CHECKLIST_ADD, CHECKLIST_TICK, FILE]))
        side = draw(st.sampled_from(["partner", "client"]))
        if kind == CREATE or not tasks:
            key = f"T{len(tasks) + 1}"
            tasks[key], contested[key] = side, set()
            statuses[key] = 1 if side == "partner" else 11
            people = ["user:2", "user:3", "user:4"] if side == "partner" else ["user:5", "user:6"]
            actions.append(create(t, side, key, assignees=[draw(st.sampled_from(people))]))
            continue
        key = draw(st.sampled_from(sorted(tasks)))
        origin = tasks[key]
        if kind == EDIT:
            free = [name for name in ("name", "description") if name not in contested[key]]
            if free:
                name = draw(st.sampled_from(free))
                actions.append(act(t, origin, EDIT, key, field=name, value=f"[{key}] {name} {step}"))
        elif kind == CONTEST:
            free = [name for name in ("name", "description") if name not in contested[key]]
            if free:
                name = draw(st.sampled_from(free))
                contested[key].add(name)
                actions.append(act(t, side, CONTEST, key, field=name,
                                   values={each: f"[{key}] {each} {step}" for each in ("partner", "client")}))
        elif kind == STATUS:
            if origin == "partner":
                status = draw(st.sampled_from([2, 3, 4]))
            else:
                moves = {11: [12, 15], 12: [13, 14], 13: [12], 14: [12]}.get(statuses[key], [])
                if not moves:
                    continue
                status = draw(st.sampled_from(moves))
            statuses[key] = status
            actions.append(act(t, origin, STATUS, key, status=status))
        elif kind == REASSIGN:
            people = ["user:3", "user:4"] if origin == "partner" else ["user:6"]
            chosen = draw(st.lists(st.sampled_from(people), min_size=1, max_size=2, unique=True))
            actions.append(act(t, origin, REASSIGN, key, assignees=chosen))
        elif kind == COMMENT:
            comment = f"C{step}"
            internal = draw(st.booleans())
            comments[comment] = (key, side, internal)
            actions.append(act(t, side, COMMENT, key, comment=comment,
                               text=("#internal " if internal else "") + f"[{comment}] said {step}"))
        elif kind in (COMMENT_EDIT, COMMENT_DELETE) and comments:
            comment = draw(st.sampled_from(sorted(comments)))
            on, by, internal = comments[comment]
            if kind == COMMENT_DELETE:
                del comments[comment]
                actions.append(act(t, by, COMMENT_DELETE, on, comment=comment))
            else:
                actions.append(act(t, by, COMMENT_EDIT, on, comment=comment,
                                   text=("#internal " if internal else "") + f"[{comment}] edited {step}"))
        elif kind == CHECKLIST_ADD:
            item = f"K{len(items) + 1}"
            items[item] = (key, side)
            actions.append(act(t, side, CHECKLIST_ADD, key, item=item, name=f"[{item}] step {step}"))
        elif kind == CHECKLIST_TICK and items:
            item = draw(st.sampled_from(sorted(items)))
            on, by = items[item]
            actions.append(act(t, by, CHECKLIST_TICK, on, item=item, done=draw(st.booleans())))
        elif kind == FILE:
            name = f"F{step}-x.txt"
            actions.append(act(t, side, FILE, key, file=name, sha256=hashlib.sha256(name.encode()).hexdigest()))
    return actions


def _things(dumps):
    """(side, task index, list key, item index) of every removable or doubleable thing."""
    return [(side, i, key, j) for side in dumps for i, task in enumerate(dumps[side])
            for key in ("comments", "checklist", "files") for j in range(len(task[key]))]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records(), st.data())
def test_any_well_formed_record_has_a_state_that_passes_and_any_damage_to_it_is_seen(actions, data):
    expected = expect(LINK, actions)
    dumps = perfect_dumps(expected)
    assert verdict_of(actions, dumps=copy.deepcopy(dumps)).ok
    things = _things(dumps)
    if things:
        side, i, key, j = data.draw(st.sampled_from(things))
        removed = copy.deepcopy(dumps)
        gone = removed[side][i][key].pop(j)
        verdict = verdict_of(actions, dumps=removed)
        # A withdrawn mirror may be absent (its original was deleted before any sync saw it).
        if "crosslink:withdrawn" not in str(gone.get("description")):
            assert verdict.lost >= 1, (side, key, gone)
        doubled = copy.deepcopy(dumps)
        doubled[side][i][key].append(copy.deepcopy(doubled[side][i][key][j]))
        verdict = verdict_of(actions, dumps=doubled)
        assert verdict.duplicates + verdict.unexpected >= 1, (side, key)
    side = data.draw(st.sampled_from(["partner", "client"]))
    doubled = copy.deepcopy(dumps)
    doubled[side].append({**copy.deepcopy(doubled[side][0]), "id": 9999})
    assert verdict_of(actions, dumps=doubled).duplicates >= 1
    missing = copy.deepcopy(dumps)
    missing[side].pop(0)
    assert verdict_of(actions, dumps=missing).lost >= 1
