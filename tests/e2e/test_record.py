"""The story Crosslink exists for, end to end: the client cuts the partner's robot off mid-project,
people on both sides keep working, access comes back.

Judged by what people did (a record kept here, by content), never by the product's markers or its
journal alone: every task, comment version and file that crossed before the cut is in each
account, nothing was deleted, and after the resume everything converges with no duplicates. The
journal then verifies offline, and the heads posted in both accounts match it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from crosslink.journal.bundle import verify_file
from crosslink.operations.journal import export_journal, open_journal
from crosslink.operations.status import link_status
from tests.e2e.conftest import eventually, settle

pytestmark = pytest.mark.e2e

LINK = "demo"
PAVEL, IRINA_P = 2, 4
IRINA_C, MARAT = 5, 6
COMMENT_FIELDS = "id,description,owner,isDeleted,files"


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
