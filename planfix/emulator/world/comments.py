"""Comments on tasks: added (as their author or backdated), edited, marked deleted, listed and filtered.

The sync mirrors comments, so the emulator keeps Planfix's ways with them: ids unique across the
account, a size cap, `owner` and `dateTime` a poster may set, deletion that only marks a comment
(it stays readable under typeList Deleted/All), and the comment-list filters by date and author. A
new comment fires "comment added"; an edit or delete fires "task changed".

Leans on other parts through `self`: the task (`_task`), people (`_person_ref`, `_people`, their
views), file ids (`_file_ids`, `_file_view`), the people filter (`_compare_sets`) and events (`_emit`).
"""

from __future__ import annotations

import copy
from typing import Any

from planfix.emulator.timepoints import date_matches, parse_write, timepoint
from planfix.emulator.world.base import Account, ApiError, WorldCore, page_bounds, parse_fields

# Planfix's documented maximum comment size, HTML included.
COMMENT_MAX_BYTES = 64 * 1024


class CommentsMixin(WorldCore):
    """Every comment of the account, by its account-wide id, with the task it belongs to."""

    def _comment(self, account: Account, comment_id: Any) -> dict[str, Any]:
        try:
            comment = account.comments.get(int(comment_id))
        except (TypeError, ValueError):
            comment = None
        if comment is None:
            raise ApiError(404, 5000, f"Comment not found by id {comment_id}")
        return comment

    def add_comment(self, account_name: str, number: Any, body: dict[str, Any], *, author: int) -> int:
        """Add a comment as AUTHOR; `owner` may name another user (posting as the mapped author)."""
        with self.lock:
            account = self.account(account_name)
            task = self._task(account, number)
            if not isinstance(body, dict):
                raise ApiError(400, 30, "The request body must be a JSON object")
            now = self.clock()
            comment: dict[str, Any] = {
                "id": account.next_comment, "task": task["id"], "description": "",
                "owner": f"user:{author}", "dateTime": now, "isDeleted": False, "isPinned": False,
                "isHidden": False, "recipients": {"users": [], "groups": []}, "files": [],
                "sourceObjectId": None, "sourceDataVersion": None,
            }
            try:
                if "owner" in body and body["owner"]:
                    comment["owner"] = self._person_ref(account, body["owner"])
                if body.get("dateTime"):
                    comment["dateTime"] = parse_write(body["dateTime"])[0]
                self._apply_comment(account, comment, body)
            except (ValueError, TypeError) as exc:
                raise ApiError(400, 41, str(exc)) from None
            account.comments[comment["id"]] = comment
            account.next_comment += 1
            task["dateOfLastComment"] = now
            self._emit(account, "comment_added", task, author, comment_id=comment["id"])
            return comment["id"]

    def _apply_comment(self, account: Account, comment: dict[str, Any], body: dict[str, Any]) -> None:
        if "description" in body:
            if not isinstance(body["description"], str):
                raise ValueError("description must be a string")
            if len(body["description"].encode("utf-8")) > COMMENT_MAX_BYTES:
                raise ValueError(f"a comment may be at most {COMMENT_MAX_BYTES} bytes")
            comment["description"] = body["description"]
        for flag in ("isPinned", "isHidden"):
            if flag in body:
                comment[flag] = bool(body[flag])
        if "recipients" in body:
            comment["recipients"] = self._people(account, body["recipients"] or {})
        if "files" in body:
            comment["files"] = self._file_ids(account, body["files"])
        for key in ("sourceObjectId", "sourceDataVersion"):
            if key in body:
                self._set_source(comment, key, body[key])

    def update_comment(self, account_name: str, comment_id: Any, body: dict[str, Any], *,
                       author: int, task_number: Any = None) -> None:
        """Edit a comment (description/files/isPinned/isHidden/...); an edit counts as task changed."""
        with self.lock:
            account = self.account(account_name)
            comment = self._comment(account, comment_id)
            if task_number is not None:
                self._task(account, task_number)
                if str(comment["task"]) != str(task_number):
                    raise ApiError(404, 5000, f"Comment not found by id {comment_id}")
            if not isinstance(body, dict):
                raise ApiError(400, 30, "The request body must be a JSON object")
            before = copy.deepcopy(comment)
            try:
                self._apply_comment(account, comment, body)
            except (ValueError, TypeError) as exc:
                comment.clear()
                comment.update(before)
                raise ApiError(400, 41, str(exc)) from None
            if comment != before:
                self._emit(account, "task_changed", account.tasks[comment["task"]], author)

    def delete_comment(self, account_name: str, comment_id: Any, *, author: int) -> None:
        """Mark deleted: the record stays readable with isDeleted true (typeList Deleted/All)."""
        with self.lock:
            account = self.account(account_name)
            comment = self._comment(account, comment_id)
            if not comment["isDeleted"]:
                comment["isDeleted"] = True
                self._emit(account, "task_changed", account.tasks[comment["task"]], author)

    def _render_comment(self, account: Account, comment: dict[str, Any], fields: str | None, *,
                        everything: bool = False) -> dict[str, Any]:
        names, _ = parse_fields(fields)
        task = account.tasks[comment["task"]]
        full = {
            "dateTime": timepoint(comment["dateTime"]), "type": "Comment", "fromType": "Planfix",
            "description": comment["description"], "task": {"id": task["id"]},
            "project": {"id": task["project"]} if task["project"] else None,
            "owner": self._person_view(account, comment["owner"]), "isDeleted": comment["isDeleted"],
            "isPinned": comment["isPinned"], "isHidden": comment["isHidden"], "isNotRead": False,
            "recipients": self._people_view(account, comment["recipients"]),
            "files": [self._file_view(account, f) for f in comment["files"] if f in account.files],
            "dataTags": [], "reminders": [],
            "sourceObjectId": comment["sourceObjectId"], "sourceDataVersion": comment["sourceDataVersion"],
        }
        if everything:
            names = set(full)
        out: dict[str, Any] = {"id": comment["id"]}
        for name in sorted(names):
            if full.get(name) is not None:
                out[name] = full[name]
        return out

    def get_comment(self, account_name: str, comment_id: Any, fields: str | None = None) -> dict[str, Any]:
        with self.lock:
            account = self.account(account_name)
            return self._render_comment(account, self._comment(account, comment_id), fields)

    @staticmethod
    def _type_list(comment: dict[str, Any], type_list: str) -> bool:
        if type_list == "All":
            return True
        if type_list == "Deleted":
            return comment["isDeleted"]
        return not comment["isDeleted"]  # Comments and New

    def _ordered(self, comments: list[dict[str, Any]], body: dict[str, Any]) -> list[dict[str, Any]]:
        for order in reversed(body.get("resultOrder") or []):
            # The spec's schema spells the key "filed", its example "field": accept both.
            key = (order or {}).get("field") or (order or {}).get("filed") or "id"
            if key not in ("id", "dateTime"):
                raise ApiError(400, 41, f"resultOrder by {key!r} is not supported")
            comments = sorted(comments, key=lambda c: (c[key], c["id"]),
                              reverse=(order or {}).get("direction") == "Desc")
        return comments

    def list_task_comments(self, account_name: str, number: Any, body: dict[str, Any]) -> list[dict[str, Any]]:
        with self.lock:
            account = self.account(account_name)
            task = self._task(account, number)
            offset, size = page_bounds(body)
            type_list = body.get("typeList") or "Comments"
            if type_list not in ("Comments", "All", "New", "Deleted"):
                raise ApiError(400, 41, f"typeList {type_list!r} is not one of Comments/All/New/Deleted")
            chosen = [c for _, c in sorted(account.comments.items())
                      if c["task"] == task["id"] and self._type_list(c, type_list)]
            chosen = self._ordered(chosen, body)
            return [self._render_comment(account, c, body.get("fields")) for c in chosen[offset:offset + size]]

    def list_comments(self, account_name: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        """POST /comment/list: filters 3000 (comment date) and 3001 (author), AND-combined."""
        with self.lock:
            account = self.account(account_name)
            offset, size = page_bounds(body)
            type_list = body.get("typeList") or "Comments"
            now = self.clock()
            chosen = []
            try:
                for _, comment in sorted(account.comments.items()):
                    if not self._type_list(comment, type_list):
                        continue
                    if all(self._comment_filter(comment, flt, now) for flt in body.get("filters") or []):
                        chosen.append(comment)
            except (ValueError, TypeError, KeyError) as exc:
                raise ApiError(400, 41, f"Invalid filter: {exc}") from None
            chosen = self._ordered(chosen, body)
            return [self._render_comment(account, c, body.get("fields")) for c in chosen[offset:offset + size]]

    def _comment_filter(self, comment: dict[str, Any], flt: dict[str, Any], now: float) -> bool:
        kind = int(flt["type"])
        if kind == 3000:
            return date_matches(comment["dateTime"], flt.get("operator", "equal"), flt.get("value"), now)
        if kind == 3001:
            wanted = flt.get("value")
            return self._compare_sets({comment["owner"]}, {str(v) for v in (wanted if isinstance(wanted, list) else [wanted])},
                                      flt.get("operator", "equal"))
        raise ValueError(f"comment filter type {kind} is not supported")
