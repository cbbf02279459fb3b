"""`crosslink demo`: the main job on an embedded default, end to end, and checked.

It starts a Redis of its own (unless REDIS_URL is set), the emulator with the partner's and the
client's accounts (crosslink/examples/emulator.yaml, Planfix's 1 request/s limit on), the
producer, and a real Celery worker process, with the scenarios of both accounts calling the
producer. Then people act in the two accounts' "web UI" and every sync is printed as the worker
does it. Then the link's rules change as the product lets them: the operator proposes a new
version, and it is in force only once an approver of each side has signed it on the side's record
task. At the end an independent checker (crosslink.operations.check) compares both sides under the
link's rules, and the link's journal (what the worker recorded as it synced) is exported and
verified offline as either party would check it; the exit code is 0 only if the sides match, the
journal holds entries and verifies, and the signed version of the rules is in force. The export is left in the demo's folder to be checked
again with `crosslink journal verify`; everything else the demo made is removed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy.exc import SQLAlchemyError

from crosslink.journal.bundle import verify_file
from crosslink.journal.versions import MappingVersions, Version, VersionRefused
from crosslink.lab.embedded_redis import redis_url_or_embedded
from crosslink.lab.stack import LocalStack
from crosslink.operations.check import check_link
from crosslink.operations.journal import export_journal
from crosslink.operations.mapping import propose
from schemas.links import Link, find_link, load_links
from workers.runtime import IN_FORCE_TTL_S

# One step of the story may wait this long for its sync (1 request/s per account is slow).
STEP_TIMEOUT_S = 90.0
# Back-off and probe delays are shrunk so the demo never sits in a retry for long.
DEMO_TIME_SCALE = 0.05
LINK = "demo"
# The journal's export, kept in the demo's folder when the rest of it is removed.
JOURNAL_EXPORT = "demo-journal.json"
# People of the example accounts (crosslink/examples/emulator.yaml).
MARAT, IRINA_CLIENT = 6, 5            # client account
PAVEL, OLGA, IRINA_PARTNER = 2, 3, 4  # partner account
# The change of rules both sides sign: the client's label in the mirrors' comment headers, and who
# approves for each side from now on (the link named nobody: the proposal's approvers count).
NEW_CLIENT_LABEL = "Client Company"
APPROVERS = {"partner": f"user:{PAVEL}", "client": f"user:{MARAT}"}
# The link is set up with version 1 of its rules, so the change the sides sign is version 2.
SIGNED_VERSION = 2
# Every worker process reads the version in force anew this often: past it, all run on the new one.
RULES_SETTLE_S = IN_FORCE_TTL_S + 0.5
# Where the link's robot keeps the journal's heads and the sides govern the link (workers.anchors),
# and how its notes there begin (workers.notes).
RECORD_TASK = f"Crosslink record: {LINK}"
NOTE_PREFIX = "Crosslink: "
# The workers' log of what the sides decide on their record tasks (workers.governance).
GOVERNANCE_LOG = "crosslink.governance"
# Python's warnings, logged by the worker (Celery's "running as root" on a demo machine): not part
# of the story; they stay in the worker's log.
PYTHON_WARNINGS_LOG = "py.warnings"


def example(name: str) -> dict[str, Any]:
    text = resources.files("crosslink").joinpath("examples", name).read_text(encoding="utf-8")
    return yaml.safe_load(text)


class Story:
    def __init__(self, stack: LocalStack, say: Callable[[str], None]):
        self.stack = stack
        self.world = stack.world
        self.say = say

    def step(self, title: str, action: Callable[[], Any], until: Callable[[], bool]) -> Any:
        self.say(f"\n▶ {title}")
        result = action()
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while time.monotonic() < deadline:
            if until() and self.stack.wait_quiet(timeout=STEP_TIMEOUT_S):
                return result
            time.sleep(0.2)
        raise TimeoutError(f"step did not sync within {STEP_TIMEOUT_S:.0f}s: {title}")

    def mirror(self, side: str, number: int) -> dict[str, Any] | None:
        return self.stack.mirror_of(LINK, side, number)

    def task(self, side: str, number: int) -> dict[str, Any]:
        return next(t for t in self.stack.dumps(LINK)[side] if t["id"] == number)

    def play(self) -> tuple[int, int]:
        """The people's story; the client's task it is about and its partner copy."""
        world = self.world
        ask = world.create_task("client", {
            "name": "Export the quarterly report to the data warehouse",
            "description": "<p>Every quarter, the sales report must land in the DWH by the 5th.</p>",
            "processId": 3, "project": {"id": 20},
            "assignees": {"users": [{"id": f"user:{IRINA_CLIENT}"}]},
            "customFieldData": [{"field": {"id": 200}, "value": 1200}],
            "endDateTime": {"date": "05-01-2027", "time": "18:00"},
        }, author=MARAT)
        self.step(f"Client: Marat creates task #{ask} for the partner's team, assigned to Irina",
                  lambda: None, lambda: self.mirror("client", ask) is not None)
        mirror = self.mirror("client", ask)["id"]
        self.say(f"  partner's copy is #{mirror}")

        self.step("Partner: Irina hands it to Pavel, the partner's lead, and comments",
                  lambda: (world.update_task("partner", mirror, {"assignees": {"users": [{"id": f"user:{PAVEL}"}]}},
                                             author=IRINA_PARTNER),
                           world.add_comment("partner", mirror, {"description": "<p>Pavel's team takes this.</p>"},
                                             author=IRINA_PARTNER)),
                  lambda: len(self.task("client", ask).get("comments", [])) >= 1)

        self.step("Partner: Pavel delegates to Olga, an engineer with no account on the client side",
                  lambda: world.update_task("partner", mirror, {"assignees": {"users": [{"id": f"user:{OLGA}"}]}},
                                            author=PAVEL),
                  lambda: True)

        file_id = world.upload_file("client", "sample-export.csv", b"quarter,revenue\nQ3,1200000\n", author=MARAT)
        note = self.step("Client: Marat comments with a sample file",
                         lambda: world.add_comment("client", ask, {
                             "description": "<p>Here is last quarter's export for reference.</p>",
                             "files": [{"id": file_id}]}, author=MARAT),
                         lambda: any("last quarter" in (c.get("description") or "")
                                     for c in self.task("partner", mirror).get("comments", [])))

        self.step("Partner: Olga moves the task straight from New to Review and reports",
                  lambda: (world.update_task("partner", mirror, {"status": {"id": 3}}, author=OLGA),
                           world.add_comment("partner", mirror, {"description": "<p>Done, please check.</p>"},
                                             author=OLGA)),
                  lambda: (self.task("client", ask).get("status") or {}).get("id") == 13)

        self.step("Client: Marat corrects his comment",
                  lambda: world.update_comment("client", note, {
                      "description": "<p>Here is last quarter's export (Q3, final numbers).</p>"}, author=MARAT),
                  lambda: any("final numbers" in (c.get("description") or "")
                              for c in self.task("partner", mirror).get("comments", [])))

        slip = world.add_comment("partner", mirror, {"description": "<p>Invoice draft: 1,200 EUR</p>"},
                                 author=PAVEL)
        self.step("Partner: Pavel posts a comment by mistake, then deletes it",
                  lambda: (self.stack.wait_quiet(STEP_TIMEOUT_S),
                           world.delete_comment("partner", slip, author=PAVEL)),
                  lambda: True)

        self.step("Client: Marat writes an internal note (never leaves the client's account)",
                  lambda: world.add_comment("client", ask, {"description": "<p>#internal budget approved</p>"},
                                            author=MARAT),
                  lambda: True)

        self.step("Client: Marat accepts the work (Waiting for client -> Accepted -> Delivered)",
                  lambda: (world.update_task("client", ask, {"status": {"id": 12}}, author=MARAT),
                           world.update_task("client", ask, {"status": {"id": 14}}, author=MARAT)),
                  lambda: (self.task("partner", mirror).get("status") or {}).get("id") == 4)
        return ask, mirror


def rules_in_force(stack: LocalStack) -> Version | None:
    """The version of the demo link's rules in force, as the journal's database has it."""
    store = stack.journal()
    try:
        return MappingVersions(store).active(LINK)
    finally:
        store.close()


class RulesScene:
    """The link's rules change as the product lets them (docs/mapping.md): the operator edits
    links.yaml and proposes it, an approver of each side signs it on the side's record task, and
    only then does what crosses follow it. STORY is the demo's, for its people and its steps."""

    def __init__(self, story: Story):
        self.story = story
        self.stack = story.stack
        self.world = story.world
        self.say = story.say
        self.number = SIGNED_VERSION

    def record_task(self, side: str) -> dict[str, Any]:
        """SIDE's record task with its comments (a worker makes it when it starts)."""
        account = find_link(self.stack.config, LINK).sides[side].account
        return next(task for task in self.world.dump_tasks(account) if task.get("name") == RECORD_TASK)

    def robot_said(self, side: str, text: str) -> bool:
        """Whether a note of the link's robot on SIDE's record task says TEXT."""
        return any((comment.get("description") or "").startswith(NOTE_PREFIX) and text in comment["description"]
                   for comment in self.record_task(side).get("comments") or [])

    def edit_links(self) -> Link:
        """The operator's edit of the stack's links.yaml: the client's new label, and approvers."""
        path = Path(self.stack.env["CROSSLINK_LINKS"])
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        link = next(item for item in doc["links"] if item["name"] == LINK)
        link["comments"]["side_labels"]["client"] = NEW_CLIENT_LABEL
        for side, person in APPROVERS.items():
            link["sides"][side]["approvers"] = [person]
        path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
        return find_link(load_links(path), LINK)

    def propose(self, link: Link) -> tuple[Version, dict[str, int]]:
        """`crosslink mapping propose`, against the stack's journal, Redis and accounts."""
        store = self.stack.journal()
        try:
            version, told = propose(store, link, env=self.stack.env)
        except VersionRefused as refused:
            raise RuntimeError(f"the proposal was refused: {refused}") from None
        finally:
            store.close()
        self.number = version.number
        return version, told

    def approve(self, side: str, person: int) -> None:
        """PERSON writes "approve vN" on SIDE's record task, from SIDE's account."""
        self.world.add_comment(side, self.record_task(side)["id"], {"description": f"approve v{self.number}"},
                               author=person)

    def play(self, ask: int, mirror: int) -> None:
        """The scene, ending with a client comment on task ASK whose MIRROR shows the new label."""
        step, said = self.story.step, self.robot_said
        version, told = step(f"Operator: in links.yaml the client's comment label becomes \"{NEW_CLIENT_LABEL}\" and "
                             "Pavel and Marat approve for their sides; the change is proposed",
                             lambda: self.propose(self.edit_links()),
                             lambda: all(said(side, f"version {self.number} of the link's rules is proposed")
                                         for side in APPROVERS))
        self.say(f"  version {version.number} proposed (needs {', '.join(sorted(version.needs))}), posted on both "
                 f"record tasks: partner #{told['partner']}, client #{told['client']}")
        step(f"Client: Marat approves version {self.number} on the client's record task",
             lambda: self.approve("client", MARAT),
             lambda: said("partner", f"approved version {self.number}"))
        in_force = rules_in_force(self.stack)
        self.say(f"  the partner's record task is told; one side's approval changes nothing: version "
                 f"{in_force.number if in_force else '?'} stays in force")
        step(f"Partner: Pavel approves version {self.number} on the partner's record task",
             lambda: self.approve("partner", PAVEL),
             lambda: all(said(side, f"version {self.number} of the link's rules is in force") for side in APPROVERS))
        self.say(f"  version {self.number} in force: both record tasks say so")
        time.sleep(RULES_SETTLE_S)
        step("Client: Marat comments under the new rules",
             lambda: self.world.add_comment("client", ask, {
                 "description": "<p>Thanks, the Q4 export can follow the same way.</p>"}, author=MARAT),
             lambda: any("Q4 export" in (c.get("description") or "") and f"({NEW_CLIENT_LABEL})" in c["description"]
                         for c in self.story.task("partner", mirror).get("comments", [])))
        self.say(f"  its mirror's header on the partner's task reads ({NEW_CLIENT_LABEL})")


def rules_verdict(stack: LocalStack, say: Callable[[str], None]) -> bool:
    """Whether the version both sides signed is the one in force, approved by each side it needed."""
    try:
        version = rules_in_force(stack)
    except SQLAlchemyError as exc:
        say(f"rules: the versions could not be read: {type(exc).__name__}: {exc}")
        return False
    if version is None or version.number != SIGNED_VERSION:
        say(f"rules: version {version.number if version else 'none'} in force, not version {SIGNED_VERSION}: "
            "the change was NOT approved by both sides")
        return False
    approvals = version.approvals()
    who = ", ".join(f"{side} by {approvals[side].person}" for side in sorted(approvals))
    say(f"rules: version {version.number} in force, approved by both sides ({who})")
    return True


def journal_verdict(stack: LocalStack, out: Path, say: Callable[[str], None]) -> bool:
    """Export the demo link's journal to OUT and verify the file offline, as either party would;
    False when it cannot be exported, holds no entry (the worker recorded nothing that crossed)
    or does not verify."""
    try:
        store = stack.journal()
        try:
            manifest = export_journal(store, LINK, out)
        finally:
            store.close()
    except (OSError, SQLAlchemyError) as exc:
        say(f"journal: not exported: {type(exc).__name__}: {exc}")
        return False
    check = verify_file(out)
    if not check.ok:
        say(f"journal: {manifest['entries']} entries exported to {out}, verification FAILED at {check.first}")
        return False
    if check.chain.head is None:
        say(f"journal: no entries exported to {out}: the worker recorded nothing that crossed")
        return False
    seq, digest = check.chain.head
    say(f"journal: {check.chain.entries} entries, head #{seq} {digest[:12]}, exported to {out}, verified OK")
    say(f"  check it again: crosslink journal verify {out}")
    return True


def verdict(stack: LocalStack, workdir: Path, say: Callable[[str], None]) -> bool:
    """Both sides checked under the link's rules, each account's requests against its limit, the
    journal exported and verified, and the signed rules in force: True when all hold."""
    result = check_link(stack.config.links[0], stack.dumps(LINK))
    say("")
    say(f"Check: {result.pairs} task pairs, {result.comments} comments mirrored, "
        f"{result.lost} lost, {result.duplicates} duplicated")
    for problem in result.problems:
        say(f"  ✗ {problem}")
    for account in ("partner", "client"):
        say(f"  {account}: {len(stack.world.requests(account))} API requests, at most "
            f"{stack.world.max_requests_in_window(account)} in any second, "
            f"{len(stack.world.violations(account))} over the limit")
    violations = sum(len(stack.world.violations(account)) for account in ("partner", "client"))
    journal_ok = journal_verdict(stack, workdir / JOURNAL_EXPORT, say)
    rules_ok = rules_verdict(stack, say)
    matched = result.ok and violations == 0
    say("Both sides match." if matched else "The sides do NOT match.")
    if not journal_ok:
        say("The journal does NOT hold a verified record of what crossed.")
    if not rules_ok:
        say("The rules both sides signed are NOT in force.")
    return matched and journal_ok and rules_ok


def run_demo(verbose: bool = True) -> int:
    say = print if verbose else (lambda _: None)
    redis_url, embedded = redis_url_or_embedded()
    workdir = Path(tempfile.mkdtemp(prefix="crosslink-demo-"))

    def narrate(line: str) -> None:
        try:
            record = json.loads(line)
        except ValueError:
            return
        message = record.get("msg", "")
        if message.startswith("synced:"):
            say("  ↻ " + message[len("synced: "):])
        elif record.get("logger") == GOVERNANCE_LOG:
            say(f"  ✓ {message}")   # a side's word on its link, logged as a warning to stand out
        elif record.get("level") in ("warning", "error") and record.get("logger") != PYTHON_WARNINGS_LOG:
            say(f"  ! {message}")

    # The producer runs in this process; its per-request lines would drown the story.
    logging.getLogger("crosslink.producer").setLevel(logging.WARNING)
    say("Crosslink demo: partner and client accounts on the Planfix emulator (1 request/s each)")
    say(f"Redis: {'embedded at ' + redis_url if embedded else redis_url}")
    stack = LocalStack(example("emulator.yaml"), example("links.yaml"), redis_url=redis_url,
                       workdir=workdir / "stack", time_scale=DEMO_TIME_SCALE, on_line=narrate)
    try:
        stack.start()
        say(f"Emulator {stack.emulator.url}, producer {stack.producer.url}, 1 Celery worker")
        say("\n▶ Backfill: tasks already in both projects are mirrored first")
        stack.backfill(LINK)
        if not stack.wait_quiet(STEP_TIMEOUT_S * 2):
            raise TimeoutError("the backfill did not finish")
        story = Story(stack, say)
        ask, mirror = story.play()
        RulesScene(story).play(ask, mirror)
        return 0 if verdict(stack, workdir, print) else 1   # the verdict, even when quiet
    except (TimeoutError, RuntimeError) as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.stop()
        if embedded is not None:
            embedded.cleanup()
        # The stack's files go (its journal among them); the export stays, if there is one.
        shutil.rmtree(workdir / "stack", ignore_errors=True)
        if not (workdir / JOURNAL_EXPORT).exists():
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(run_demo(verbose=os.environ.get("CROSSLINK_DEMO_QUIET") is None))
