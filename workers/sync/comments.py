"""Comment mirroring: each comment of the run's task is copied to the counterpart once, rendered
as the sync's own (workers.comment_policy), its edits update the copy, its deletion marks the
copy withdrawn and never deletes it.

Why a module of its own: comments are the one thing a run carries that people on both sides
write at once and that events name one by one, so this step has rules of its own (a comment an
event names is read with its task and rejected when it is not the linked task's; the
integration user's comments are never mirrored back; a deleted copy is told beside its
original). It makes its requests through the run's gateway, passed in, never through the run.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from crosslink.journal.store import utc_now
from crosslink.queue.names import comment_fingerprint, record_rejected
from planfix.errors import AccessDenied, NotFound
from workers.canonical import ref_id
from workers.comment_policy import render_mirror, render_withdrawn, should_mirror
from workers.idempotency import WriteOnce
from workers.notes import note
from workers.state import mirror_marker, mirror_source_id
from workers.sync.context import RunContext
from workers.sync.files import mirror_file
from workers.sync.gateway import Gateway, SideFailure
from workers.sync.notices import leave_note
from workers.sync.views import quoted, timepoint_text

log = logging.getLogger("crosslink.sync")

COMMENT_FIELDS = "id,description,owner,dateTime,isDeleted,files,sourceObjectId,sourceDataVersion"
# A comment an event names is read with its task (the spec's CommentResponse.task): an event may
# name a comment of another task, whose text must not cross to the other account.
TRIGGER_COMMENT_FIELDS = COMMENT_FIELDS + ",task"
# Planfix's "access denied to the method or object" (API-NOTES section 1): on reading a comment an
# event named, that comment is not one the link's user can see, so not one of the linked task's.
OBJECT_ACCESS_DENIED = 6


def sync_comments(ctx: RunContext, counterpart: int, only: tuple[int, ...] | None = None, *,
                  gateway: Gateway, writes: WriteOnce) -> None:
    """Mirror the run's task's comments to COUNTERPART (CommentMirror.sync)."""
    CommentMirror(ctx, gateway=gateway, writes=writes).sync(counterpart, only)


class CommentMirror:
    """Mirrors the comments of the run's task (CTX) to its counterpart, through GATEWAY, each
    copy made once (WRITES)."""

    def __init__(self, ctx: RunContext, *, gateway: Gateway, writes: WriteOnce):
        self.ctx, self.gateway, self.writes = ctx, gateway, writes
        self.link, self.side, self.other, self.number = ctx.link, ctx.side, ctx.other, ctx.number
        self.state, self.report = ctx.state, ctx.report

    def sync(self, counterpart: int, only: tuple[int, ...] | None = None) -> None:
        """Mirror new, edited and deleted comments of the run's task: the ONLY ones (those its
        events named, read one by one and checked against the task: _trigger_comment), or every
        comment (one paged list of the task's own)."""
        link, side, other = self.link, self.side, self.other
        integration = link.sides[side].integration_user
        seen = self.state.comment_fingerprints(side, self.number)
        if only is None:
            comments = self.gateway.call(side, "list_task_comments", self.number, fields=COMMENT_FIELDS,
                                         type_list="All")
        else:
            comments = [comment for comment in map(self._trigger_comment, only) if comment is not None]
        for comment in comments:
            comment_id = int(comment["id"])
            if (comment.get("owner") or {}).get("id") == integration:
                if comment.get("isDeleted"):
                    self._tell_of_deleted_copy(counterpart, comment, seen)
                continue
            if self.state.is_mirror("comment", side, comment_id):
                continue
            text = comment.get("description") or ""
            deleted = bool(comment.get("isDeleted"))
            print_ = comment_fingerprint(text, deleted)
            if seen.get(comment_id) == print_:
                continue
            author = (comment.get("owner") or {}).get("name") or (comment.get("owner") or {}).get("id", "?")
            when = timepoint_text(comment.get("dateTime"))
            mirror = self.state.counterpart("comment", side, comment_id)
            if mirror is None and self.writes.started(self._comment_write_key(comment_id)):
                mirror = self._begun_comment_mirror(counterpart, comment_id, text, author, when)
            if mirror is None:
                if not deleted and should_mirror(link, side, text):
                    self._create_comment_mirror(counterpart, comment, author, when)
                    self.report.comments_created += 1
            elif deleted:
                # The text it was deleted with, above what crossed before: an edit no run saw
                # before the deletion (its webhook dropped) was shown nowhere else.
                versions = self._versions(comment_id, text)
                html = render_withdrawn(link, side, self._render(author, when, versions), when)
                self.gateway.call(other, "update_comment", counterpart, mirror, {"description": html})
                self.state.save_comment_versions(side, comment_id, versions)
                self._crossed("withdrawn", comment_id, counterpart, mirror, versions, author, when)
                self.report.comments_withdrawn += 1
            else:
                self._carry_edit(counterpart, comment_id, mirror, text, author, when)
            self.state.save_comment_fingerprint(side, self.number, comment_id, print_)

    def _carry_edit(self, counterpart: int, comment_id: int, mirror: int, text: str, author: str, when: str) -> None:
        """The comment now reads TEXT: its mirror shows it above the versions it crossed with
        before, unless it shows it already (its versions end with TEXT: the run that wrote it
        saved them only once Planfix took it, or, for the first, before it made the mirror it
        then paired). Shown already, it is recorded all the same, once by its key: the run that
        wrote it may have been killed before it recorded it (quick chaos seed 1)."""
        versions = self._versions(comment_id, text)
        if versions == self.state.comment_versions(self.side, comment_id):
            self._crossed("comment version", comment_id, counterpart, mirror, versions, author, when)
            return
        html = self._render(author, when, versions)
        self.gateway.call(self.other, "update_comment", counterpart, mirror, {"description": html})
        self.state.save_comment_versions(self.side, comment_id, versions)
        self._crossed("comment version", comment_id, counterpart, mirror, versions, author, when)
        self.report.comments_updated += 1

    def _versions(self, comment_id: int, text: str) -> list[dict[str, Any]]:
        """The comment's versions as mirrored, oldest first, with TEXT (as edited, or as deleted)
        as the last. A comment mirrored before versions were kept starts its list here."""
        versions = self.state.comment_versions(self.side, comment_id)
        if not versions or versions[-1]["text"] != text:
            versions.append({"text": text, "at": utc_now()})
        return versions

    def _render(self, author: str, when: str, versions: list[dict[str, Any]]) -> str:
        """The mirror's HTML: the last version, the earlier ones folded below it, each with the
        time the next replaced it."""
        earlier = [(version["text"], f"{following['at'][:16].replace('T', ' ')} UTC")
                   for version, following in zip(versions, versions[1:])]
        return render_mirror(self.link, self.side, author, when, versions[-1]["text"], earlier)

    def _crossed(self, kind: str, comment_id: int, counterpart: int, mirror: int, versions: list[dict[str, Any]],
                 author: str, when: str) -> None:
        """Record in the journal a comment's version (its number, its text's hash) crossing. A
        first version carried by an update is the comment itself: the run that made its mirror
        lost the answer, and recorded nothing."""
        version = len(versions)
        if kind == "comment version" and version == 1:
            kind = "comment"
        self.ctx.crossed(kind, source={"task": self.number, "comment": comment_id, "version": version},
                         target={"task": counterpart, "comment": mirror},
                         content={"author": author, "when": when, "text": versions[-1]["text"]},
                         key=f"{self.side}:{comment_id}:{version}")

    def _tell_of_deleted_copy(self, counterpart: int, comment: Mapping[str, Any], seen: Mapping[int, str]) -> None:
        """A person deleted our copy of the other side's comment: the original stays, and a note
        beside it says the copy is gone (once: the deleted copy's fingerprint is kept)."""
        comment_id = int(comment["id"])
        print_ = comment_fingerprint(comment.get("description") or "", True)
        if seen.get(comment_id) == print_ or self.state.counterpart("comment", self.side, comment_id) is None:
            return  # told already, or not a copy of a comment (a note of ours)
        leave_note(self.ctx, self.other, counterpart,
                   note(self.link, self.other, "copy_deleted", other=self.side,
                        excerpt=json.dumps(quoted(comment.get("description") or ""), ensure_ascii=False)),
                   f"copy-deleted:{self.side}:{comment_id}", gateway=self.gateway, writes=self.writes)
        self.state.save_comment_fingerprint(self.side, self.number, comment_id, print_)

    def _trigger_comment(self, comment_id: int) -> Mapping[str, Any] | None:
        """The comment COMMENT_ID an event named, read with its task in the same request; None
        when there is nothing to mirror from it, before anything is written:
        - gone (deleted for good, or never there): a recorded no-op (report.missing, a log line),
          not a failure: no dead letter, so the task's later events run;
        - on another task, on none, or not visible to the link's user: the event is rejected
          (report.rejected, a log line, `crosslink rejected`), as mirroring it would copy a
          comment the link does not cover into the other account.
        """
        try:
            comment = self.gateway.call(self.side, "get_comment", comment_id, fields=TRIGGER_COMMENT_FIELDS)
        except SideFailure as failure:
            if isinstance(failure.error, NotFound):
                self.report.missing.append(f"comment {comment_id}")
                log.info("comment %s named by an event no longer exists: nothing to mirror", comment_id)
                return None
            if isinstance(failure.error, AccessDenied) and failure.error.code == OBJECT_ACCESS_DENIED:
                self._reject_comment(comment_id, "the link's user may not see it")
                return None
            raise
        on_task = ref_id(comment.get("task"))
        if on_task != self.number:
            self._reject_comment(comment_id, f"it is on task {on_task}" if on_task else "it is on no task")
            return None
        return comment

    def _reject_comment(self, comment_id: int, why: str) -> None:
        """Record an event naming COMMENT_ID, which is not the run's task's, as rejected (WHY)."""
        reason = f"comment {comment_id} is not on task {self.number}: {why}"
        self.report.rejected.append(reason)
        log.warning("event rejected, nothing written: %s", reason)
        record_rejected(self.state.redis, link=self.link.name, side=self.side, reason=reason,
                        task=self.number, comment=comment_id, event="comment_added", origin="worker")

    def _comment_write_key(self, comment_id: int) -> str:
        return f"{self.link.name}:comment:{self.side}:{comment_id}"

    def _begun_comment_mirror(self, counterpart: int, comment_id: int, text: str, author: str,
                              when: str) -> int | None:
        """The mirror of COMMENT_ID an earlier run began and did not pair (its answer lost, its
        worker killed), now paired, and recorded as the crossing it was; None when that write
        never landed. Without it, a deletion or edit since found no mirror to carry to (the
        quick chaos run kept a deleted comment's mirror unwithdrawn so), and an edit was
        mirrored by adopting the mirror's older text. The text it was made with is the one saved
        before it was sent (else TEXT: a mirror begun before versions were kept)."""
        link, side, other = self.link, self.side, self.other
        mirror = self.writes.done(self._comment_write_key(comment_id))
        if mirror is None:
            mirror = self._find_comment(counterpart, mirror_source_id(link.name, side, "comment", comment_id))
        if mirror is not None:
            made = self.state.comment_versions(side, comment_id)[:1] or [{"text": text, "at": utc_now()}]
            self.state.save_comment_versions(side, comment_id, made)
            self._crossed("comment", comment_id, counterpart, mirror, made, author, when)
            self.state.pair("comment", side, comment_id, other, mirror)
            self.state.mark_mirror("comment", other, mirror)
        return mirror

    def _create_comment_mirror(self, counterpart: int, comment: Mapping[str, Any], author: str,
                               when: str) -> None:
        link, side, other = self.link, self.side, self.other
        comment_id = int(comment["id"])
        source_id = mirror_source_id(link.name, side, "comment", comment_id)
        body: dict[str, Any] = {
            "description": render_mirror(link, side, author, when, comment.get("description") or ""),
            "sourceObjectId": source_id,
            "sourceDataVersion": mirror_marker(link.name, side, comment_id),
        }
        files = [mirror_file(self.ctx, int(f["id"]), gateway=self.gateway, writes=self.writes)
                 for f in comment.get("files") or [] if f.get("id")]
        if files:
            body["files"] = [{"id": file_id} for file_id in files]

        # The text it is made with, kept before it is sent: should the answer be lost, the run
        # that finds the mirror knows what crossed (_begun_comment_mirror).
        versions = [{"text": comment.get("description") or "", "at": utc_now()}]
        self.state.save_comment_versions(side, comment_id, versions)
        mirror = self.writes.run(
            self._comment_write_key(comment_id),
            write=lambda: self.gateway.call(other, "create_comment", counterpart, body),
            find_existing=lambda: self._find_comment(counterpart, source_id),
        )
        # Recorded before it is paired (TaskWriter.create_counterpart says why).
        self._crossed("comment", comment_id, counterpart, mirror, versions, author, when)
        self.state.pair("comment", side, comment_id, other, mirror)
        self.state.mark_mirror("comment", other, mirror)

    def _find_comment(self, counterpart: int, source_id: str) -> int | None:
        """The comment on the counterpart marked SOURCE_ID (only after a lost answer: one list)."""
        for candidate in self.gateway.call(self.other, "list_task_comments", counterpart,
                                           fields="id,sourceObjectId", type_list="All"):
            if candidate.get("sourceObjectId") == source_id:
                return int(candidate["id"])
        return None
