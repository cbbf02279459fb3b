"""The story Crosslink exists for, end to end: the client cuts the partner's robot off mid-project,
people on both sides keep working, access comes back.

Judged by what people did (a record kept here, by content), never by the product's markers or its
journal alone: every task, comment version and file that crossed before the cut is in each
account, nothing was deleted, and after the resume everything converges with no duplicates. The
journal then verifies offline, and the heads posted in both accounts match it.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import time

import pytest
import yaml

from crosslink.journal.bundle import verify_file
from crosslink.journal.chain import check_chain, content_hash
from crosslink.journal.versions import MappingVersions
from crosslink.operations.journal import export_journal, open_journal
from crosslink.operations.status import link_status
from tests.e2e.conftest import eventually, settle, start_stack

pytestmark = pytest.mark.e2e

LINK = "demo"
PAVEL, IRINA_P = 2, 4
IRINA_C, MARAT = 5, 6
COMMENT_FIELDS = "id,description,owner,isDeleted,files"


def with_approvers(links):
    """Pavel approves for the partner, Marat for the client: they may pause what their side sends."""
    sides = links["links"][0]["sides"]
    sides["partner"]["approvers"], sides["client"]["approvers"] = [f"user:{PAVEL}"], [f"user:{MARAT}"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack, server = start_stack(tmp_path_factory, edit_links=with_approvers)
    try:
        yield stack
    finally:
        stack.stop()
        server.cleanup()


def comments(stack, side, number):
    return stack.world.list_task_comments(side, number, {"typeList": "All", "fields": COMMENT_FIELDS})


def people_said(stack, side, number):
    return [c for c in comments(stack, side, number) if not c["description"].startswith("Crosslink: ")]


def holding(stack, side, number, text):
    """The comments on SIDE's task NUMBER whose text holds TEXT (an original or its mirror)."""
    return [c for c in people_said(stack, side, number) if text in c["description"]]


def current_part(html):
    """A mirror's current text: what precedes its folded earlier versions."""
    return html.split("<!--crosslink:earlier-->")[0]


class Record:
    """What people did, as they did it: each comment's texts in order, each file's bytes."""

    def __init__(self):
        self.comments = {}  # key -> (side written on, [texts in order])
        self.files = {}     # name -> bytes

    def said(self, stack, side, number, key, text, author, files=()):
        body = {"description": f"<p>[{key}] {text}</p>"}
        if files:
            body["files"] = [{"id": file_id} for file_id in files]
        comment = stack.world.add_comment(side, number, body, author=author)
        self.comments[key] = (side, [body["description"]], comment)
        return comment

    def edited(self, stack, key, text, author):
        side, texts, comment = self.comments[key]
        texts.append(f"<p>[{key}] {text}</p>")
        stack.world.update_comment(side, comment, {"description": texts[-1]}, author=author)


def test_revocation_mid_project_loses_nothing_and_the_record_holds(stack, tmp_path):
    record = Record()
    partner_task = stack.world.create_task("partner", {
        "name": "Stage 2 scope", "processId": 1, "project": {"id": 10},
        "assignees": {"users": [{"id": f"user:{IRINA_P}"}]}}, author=PAVEL)
    copy = eventually(lambda: stack.mirror_of(LINK, "partner", partner_task), what="the task mirrored")["id"]
    settle(stack)
    spec = stack.world.upload_file("partner", "scope.txt", b"stage 2: 40 hours", author=PAVEL)
    record.files["scope.txt"] = b"stage 2: 40 hours"
    record.said(stack, "partner", partner_task, "P1", "Scope attached", PAVEL, files=[spec])
    record.said(stack, "client", copy, "C1", "Price agreed: 100", MARAT)
    eventually(lambda: holding(stack, "client", copy, "[P1]") and holding(stack, "partner", partner_task, "[C1]"),
               what="both comments crossed")
    settle(stack)
    record.edited(stack, "C1", "Price agreed: 120", MARAT)
    eventually(lambda: "Price agreed: 120" in current_part(holding(stack, "partner", partner_task, "[C1]")[0]
                                                           ["description"]), what="the edit crossed")
    settle(stack)
    crossed_before = {key: list(texts) for key, (_, texts, _) in record.comments.items()}

    # The client cuts the partner's robot off; people on both sides keep working.
    token = stack.env[stack.config.links[0].sides["client"].token_env]
    stack.world.revoke_token("client", token)
    try:
        record.said(stack, "partner", partner_task, "P2", "During the pause: revised plan", PAVEL)
        record.said(stack, "client", copy, "C2", "During the pause: we wait", MARAT)
        record.edited(stack, "C1", "Price agreed: 150 (client's edit during the pause)", MARAT)
        eventually(lambda: link_status(stack.env["CROSSLINK_LINKS"], stack.redis_url)[0]["severed"],
                   what="the link severed")
        # Each account still holds everything that crossed before the cut, each version of it.
        on_partner = holding(stack, "partner", partner_task, "[C1]")
        assert len(on_partner) == 1 and not on_partner[0]["isDeleted"]
        for text in crossed_before["C1"]:
            assert text in on_partner[0]["description"]
        [scope_on_client] = holding(stack, "client", copy, "[P1]")
        [copied_file] = scope_on_client["files"]
        assert stack.world.account("client").files[copied_file["id"]]["content"] == record.files["scope.txt"]
    finally:
        stack.world.restore_token("client", token)

    # Access is back: everything people did converges, once each, and nothing was deleted.
    def converged():
        for key, (side, texts, _) in record.comments.items():
            other, number = ("client", copy) if side == "partner" else ("partner", partner_task)
            found = holding(stack, other, number, f"[{key}]")
            if len(found) != 1 or texts[-1] not in current_part(found[0]["description"]):
                return False
        return True

    eventually(converged, what="every comment converged")
    settle(stack)
    for side, number in (("partner", partner_task), ("client", copy)):
        for key in record.comments:
            found = holding(stack, side, number, f"[{key}]")
            assert len(found) == 1, (side, key, found)
            assert not found[0]["isDeleted"]
    [kept] = holding(stack, "partner", partner_task, "[C1]")
    for text in record.comments["C1"][1]:
        assert text in kept["description"]  # every version seen, the last one current
    assert link_status(stack.env["CROSSLINK_LINKS"], stack.redis_url)[0]["severed"] == {}
    for account in ("partner", "client"):
        assert not [r for r in stack.world.requests(account) if r["method"] == "DELETE"]

    # The journal records the cut and the resume, and its head after the resume is anchored in
    # both accounts, where each party can read it back.
    journal = open_journal(stack.env["CROSSLINK_LINKS"])
    try:
        kinds = [entry.kind for entry in journal.entries(LINK)]
        resumed = max(entry.seq for entry in journal.entries(LINK) if entry.kind == "resumed")
        eventually(lambda: {a.side for a in journal.anchors(LINK) if a.seq >= resumed} == {"partner", "client"},
                   what="the head anchored in both accounts after the resume")
        bundle = tmp_path / "journal.json"
        export_journal(journal, LINK, bundle)
    finally:
        journal.close()
    assert kinds.index("severed") < kinds.index("resumed")
    assert verify_file(bundle).ok
    live = subprocess.run([sys.executable, "-m", "crosslink.cli", "journal", "verify", str(bundle), "--live",
                           "--config", stack.env["CROSSLINK_LINKS"]], env={**os.environ, **stack.env},
                          capture_output=True, text=True, timeout=120)
    assert live.returncode == 0, live.stdout + live.stderr
    for account in ("partner", "client"):
        assert re.search(rf"^{account}: OK, [1-9]\d* anchor\(s\) match", live.stdout, re.M), live.stdout
    for account in ("partner", "client"):
        record = [task for task in stack.world.dump_tasks(account) if task["name"].startswith("Crosslink record")]
        assert len(record) == 1, record  # one record task per account, never mirrored


def record_task(stack, side):
    [record] = eventually(lambda: [task for task in stack.world.dump_tasks(side)
                                   if task["name"].startswith("Crosslink record")], what=f"the {side} record task")
    return record["id"]


def test_a_pause_from_the_clients_own_account_holds_what_it_sends_until_it_resumes(stack):
    on_client, on_partner = record_task(stack, "client"), record_task(stack, "partner")
    number = stack.world.create_task("client", {
        "name": "Paused work", "processId": 3, "project": {"id": 20},
        "assignees": {"users": [{"id": f"user:{IRINA_C}"}]}}, author=MARAT)
    copy = eventually(lambda: stack.mirror_of(LINK, "client", number), what="the task mirrored")["id"]
    settle(stack)

    # A person who is no approver cannot pause; the client's approver can, from the client's account.
    stack.world.add_comment("client", on_client, {"description": "pause"}, author=IRINA_C)
    stack.world.add_comment("client", on_client, {"description": "<p>Pause</p>"}, author=MARAT)
    eventually(lambda: [c for c in comments(stack, "partner", on_partner) if "paused everything it sends" in c["description"]],
               what="the notice of the pause on the partner's record task")
    said = ["[W1] first while paused", "[W2] second while paused"]
    for text in said:
        stack.world.add_comment("client", number, {"description": f"<p>{text}</p>"}, author=MARAT)
    stack.world.update_task("client", number, {"name": "Paused work, renamed"}, author=MARAT)
    answer = stack.world.add_comment("partner", copy, {"description": "<p>[P9] the partner still sends</p>"},
                                     author=PAVEL)
    eventually(lambda: holding(stack, "client", number, "[P9]"), what="the partner's comment to cross")
    # The client's events were taken and parked, not carried (the pipeline is not quiet while they wait).
    eventually(lambda: link_status(stack.env["CROSSLINK_LINKS"], stack.redis_url)[0]["parked_events"] >= 1,
               what="the client's events parked")
    assert not holding(stack, "partner", copy, "[W1]") and not holding(stack, "partner", copy, "[W2]")
    assert stack.world.get_task("partner", copy, "name")["name"] == "Paused work"
    assert answer

    stack.world.add_comment("client", on_client, {"description": "resume"}, author=MARAT)
    eventually(lambda: len(holding(stack, "partner", copy, "[W2]")) == 1
               and stack.world.get_task("partner", copy, "name")["name"] == "Paused work, renamed",
               what="what waited to cross")
    settle(stack)
    arrived = [c for c in people_said(stack, "partner", copy) if "[W" in c["description"]]
    assert [text for c in arrived for text in said if text in c["description"]] == said  # in order, once each
    assert [c for c in comments(stack, "partner", on_partner) if "resumed sending" in c["description"]]
    journal = open_journal(stack.env["CROSSLINK_LINKS"])
    try:
        kinds = [(entry.kind, entry.side) for entry in journal.entries(LINK) if entry.kind in ("paused", "unpaused")]
    finally:
        journal.close()
    assert kinds == [("paused", "client"), ("unpaused", "client")]   # the non-approver's "pause" was no command


# Before the rules change below: the mirror's labels are version 1's.
def test_a_comment_edited_three_times_keeps_every_version_on_the_other_side_and_in_the_journal(stack):
    number = stack.world.create_task("client", {"name": "Versions", "processId": 3, "project": {"id": 20}, "assignees": {"users": [{"id": f"user:{IRINA_C}"}]}}, author=MARAT)
    copy = eventually(lambda: stack.mirror_of(LINK, "client", number), what="the task mirrored")["id"]
    texts = ["<p>Price: 100</p>", "<p>Price: 120</p>", "<p>Price: 150</p>", "<p>Price: 150, due Friday</p>"]
    comment = stack.world.add_comment("client", number, {"description": texts[0]}, author=MARAT)
    eventually(lambda: people_said(stack, "partner", copy), what="the comment mirrored")
    for text in texts[1:]:
        settle(stack)
        stack.world.update_comment("client", comment, {"description": text}, author=MARAT)
        eventually(lambda text=text: text in people_said(stack, "partner", copy)[0]["description"],
                   what="the edit mirrored")
    settle(stack)
    [shown] = people_said(stack, "partner", copy)
    html = shown["description"]
    # The current text first, then every earlier one, newest first, each folded under its label.
    positions = [html.index(text) for text in reversed(texts)]
    assert positions == sorted(positions), html
    assert html.count("Earlier version, as Client Co had it until") == 3

    # The journal holds the four versions, each with the hash of what the person wrote.
    when = stack.world.get_comment("client", comment, "dateTime")["dateTime"]
    shown_when = f"{when['date']} {when['time']}".strip()
    journal = open_journal(stack.env["CROSSLINK_LINKS"])
    try:
        versions = [entry for entry in journal.entries(LINK, side="client", task=number)
                    if entry.source.get("comment") == comment]
        assert check_chain(LINK, journal.entries(LINK)).ok
    finally:
        journal.close()
    assert [(entry.kind, entry.source["version"]) for entry in versions] == [
        ("comment", 1), ("comment version", 2), ("comment version", 3), ("comment version", 4)]
    assert [entry.content for entry in versions] == [
        content_hash({"author": "Marat Analyst", "when": shown_when, "text": text}) for text in texts]
    assert {entry.target["comment"] for entry in versions} == {shown["id"]}


def crosslink(stack, *args):
    return subprocess.run([sys.executable, "-m", "crosslink.cli", *args, "--config", stack.env["CROSSLINK_LINKS"]],
                          env={**os.environ, **stack.env}, capture_output=True, text=True, timeout=120)


def robot_said(stack, side, number, text):
    return [c for c in comments(stack, side, number) if c["description"].startswith("Crosslink: ") and text in c["description"]]


def test_a_new_version_of_the_rules_is_in_force_only_once_both_sides_approved_it(stack):
    on_client, on_partner = record_task(stack, "client"), record_task(stack, "partner")
    number = stack.world.create_task("client", {
        "name": "Versioned rules", "processId": 3, "project": {"id": 20},
        "assignees": {"users": [{"id": f"user:{IRINA_C}"}]}}, author=MARAT)
    copy = eventually(lambda: stack.mirror_of(LINK, "client", number), what="the task mirrored")["id"]
    links_path = pathlib.Path(stack.env["CROSSLINK_LINKS"])
    links = yaml.safe_load(links_path.read_text(encoding="utf-8"))
    links["links"][0]["comments"]["side_labels"]["client"] = "Client Company"
    links_path.write_text(yaml.safe_dump(links, allow_unicode=True), encoding="utf-8")

    proposed = crosslink(stack, "mapping", "propose", "--link", LINK)
    assert proposed.returncode == 0, proposed.stdout + proposed.stderr
    assert "version 2 proposed (needs client, partner)" in proposed.stdout
    for side, record in (("client", on_client), ("partner", on_partner)):
        [posted] = robot_said(stack, side, record, "version 2 of the link's rules is proposed")
        assert "Client Company" in posted["description"]          # what it changes, in words

    # One side's approval changes nothing: what crosses still reads as version 1 has it.
    stack.world.add_comment("client", on_client, {"description": "approve v2"}, author=MARAT)
    eventually(lambda: robot_said(stack, "partner", on_partner, "approved version 2"),
               what="the partner told of the client's approval")
    stack.world.add_comment("client", number, {"description": "<p>[V1] under the old rules</p>"}, author=MARAT)
    [old] = eventually(lambda: holding(stack, "partner", copy, "[V1]"), what="the comment crossed")
    assert "(Client Co)" in old["description"]

    # Both approved: the next change crosses under version 2, and the journal says so.
    stack.world.add_comment("partner", on_partner, {"description": "Approve V2"}, author=PAVEL)
    eventually(lambda: robot_said(stack, "client", on_client, "version 2 of the link's rules is in force"),
               what="version 2 in force")
    time.sleep(1.5)   # every worker process reads the version in force anew (workers.runtime.IN_FORCE_TTL_S)
    stack.world.add_comment("client", number, {"description": "<p>[V2] under the new rules</p>"}, author=MARAT)
    [new] = eventually(lambda: holding(stack, "partner", copy, "[V2]"), what="the comment crossed")
    assert "(Client Company)" in new["description"]
    shown = crosslink(stack, "mapping", "show", "--link", LINK)
    assert "version 2 in force" in shown.stdout, shown.stdout
    journal = open_journal(stack.env["CROSSLINK_LINKS"])
    try:
        versions = {v.number: v.rules_hash for v in MappingVersions(journal).history(LINK)}
        eventually(lambda: [e for e in journal.entries(LINK) if e.kind == "mapping version"
                            and e.source.get("version") == 2], what="the version's journal entry")
        crossed = {e.source.get("comment"): e.rules for e in journal.entries(LINK) if e.kind == "comment"}
    finally:
        journal.close()
    by_key = {c["description"]: c["id"] for c in people_said(stack, "client", number)}
    first = next(i for text, i in by_key.items() if "[V1]" in text)
    second = next(i for text, i in by_key.items() if "[V2]" in text)
    assert (crossed[first], crossed[second]) == (versions[1], versions[2])
