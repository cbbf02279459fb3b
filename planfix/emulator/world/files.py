"""Files: uploaded bytes, attached to tasks and comments, downloaded through expiring signed links.

Planfix hands out a presigned S3 URL for a file's bytes that needs no token and expires; the sync
copies attachments across accounts through such links, so the emulator signs its own download
path with an HMAC and an expiry. Tasks and comments hold file ids only; this part checks those ids
and shows a file as Planfix does (size in KB, rounded up).

Leans on other parts through `self`: attaching a file finds the task (`_task`) and fires the
task's change (`_emit`).
"""

from __future__ import annotations

import hashlib
import hmac
import math
from typing import Any

from planfix.emulator.world.base import Account, ApiError, WorldCore, as_int

# How long a file's downloadUrl stays valid, like Planfix's presigned S3 URLs.
FILE_URL_TTL_S = 600


def _file_size_kb(size_bytes: int) -> int:
    """Planfix reports file sizes in KB, rounded up (live-verified)."""
    return math.ceil(size_bytes / 1024)


class FilesMixin(WorldCore):
    """Stored files, their signed download links, and the file ids tasks and comments carry."""

    def _file(self, account: Account, file_id: Any) -> dict[str, Any]:
        try:
            stored = account.files.get(int(file_id))
        except (TypeError, ValueError):
            stored = None
        if stored is None:
            raise ApiError(404, 7000, f"File not found by id {file_id}")
        return stored

    def upload_file(self, account_name: str, name: str, content: bytes, *, author: int) -> int:
        with self.lock:
            account = self.account(account_name)
            file_id = account.next_file
            account.files[file_id] = {"id": file_id, "name": name, "content": bytes(content),
                                      "owner": author, "created": self.clock()}
            account.next_file += 1
            return file_id

    def _signature(self, account_name: str, file_id: int, expires: int) -> str:
        message = f"{account_name}:{file_id}:{expires}".encode()
        return hmac.new(self._url_secret, message, hashlib.sha256).hexdigest()

    def download_path(self, account_name: str, file_id: int) -> str:
        """The signed, expiring path (no auth needed) that stands in for Planfix's presigned URL."""
        expires = int(self.clock()) + FILE_URL_TTL_S
        signature = self._signature(account_name, file_id, expires)
        return f"/_emulator/{account_name}/files/{file_id}/content?expires={expires}&signature={signature}"

    def get_file(self, account_name: str, file_id: Any, fields: str | None, base_url: str) -> dict[str, Any]:
        with self.lock:
            account = self.account(account_name)
            stored = self._file(account, file_id)
            view = {**self._file_view(account, stored["id"]),
                    "downloadUrl": base_url.rstrip("/") + self.download_path(account_name, stored["id"])}
            return self._pick(view, fields)

    def signed_content(self, account_name: str, file_id: Any, expires: Any, signature: str) -> tuple[str, bytes]:
        """(name, bytes) for a signed download URL; ApiError 403 when the URL is forged or expired."""
        with self.lock:
            account = self.account(account_name)
            stored = self._file(account, file_id)
            try:
                expires_at = int(expires)
            except (TypeError, ValueError):
                raise ApiError(403, 6, "Bad download link") from None
            expected = self._signature(account_name, stored["id"], expires_at)
            if not hmac.compare_digest(expected, str(signature)) or expires_at < self.clock():
                raise ApiError(403, 6, "Download link expired or invalid")
            return stored["name"], stored["content"]

    def attach_file_to_task(self, account_name: str, file_id: Any, number: Any, *, author: int) -> None:
        with self.lock:
            account = self.account(account_name)
            stored = self._file(account, file_id)
            task = self._task(account, number)
            if stored["id"] not in task["files"]:
                task["files"].append(stored["id"])
                task["dateOfLastUpdate"] = self.clock()
                self._emit(account, "task_changed", task, author)

    def task_files(self, account_name: str, number: Any, only_description: bool = False) -> list[dict[str, Any]]:
        with self.lock:
            account = self.account(account_name)
            task = self._task(account, number)
            ids = list(task["files"])
            if not only_description:
                for comment in account.comments.values():
                    if comment["task"] == task["id"] and not comment["isDeleted"]:
                        ids.extend(comment["files"])
            return [self._file_view(account, f) for f in dict.fromkeys(ids) if f in account.files]

    # -- file ids and views, for tasks and comments -------------------------------------------

    @staticmethod
    def _file_ids(account: Account, value: Any) -> list[int]:
        if not isinstance(value, list):
            raise ValueError("files must be a list of {id}")
        ids = [as_int(item, "file id") for item in value]
        missing = [file_id for file_id in ids if file_id not in account.files]
        if missing:
            raise ValueError(f"File not found by id {missing[0]}")
        return list(dict.fromkeys(ids))

    def _file_view(self, account: Account, file_id: int) -> dict[str, Any]:
        stored = account.files[file_id]
        return {"id": file_id, "name": stored["name"], "size": _file_size_kb(len(stored["content"]))}
