"""An account's directory: its people (users, contacts, groups), processes and statuses, custom fields.

Tasks, comments and checklist items all name people and a task's status lives in a process, so
every write checks its references against this directory, and every read shows them as Planfix
does ("user:5" with a name, a status with its colour). The directory's own REST lists (users,
processes, statuses, custom fields) answer from here too. It is seeded once and, but for a user's
active flag, never changes.
"""

from __future__ import annotations

from typing import Any

from planfix.emulator.world.base import Account, ApiError, WorldCore, as_int, page_bounds


class DirectoryMixin(WorldCore):
    """People and their references, processes and statuses, custom fields: checked on write, shown on read."""

    # -- people and their references ----------------------------------------------------------

    def _person_ref(self, account: Account, value: Any) -> str:
        """Normalize {"id":"user:5"} / "user:5" / 5 to "user:5"; users must exist."""
        if isinstance(value, dict):
            value = value.get("id")
        text = str(value).strip() if value is not None else ""
        if text.isdigit():
            text = f"user:{text}"
        kind, _, number = text.partition(":")
        if kind not in ("user", "contact") or not number.isdigit():
            raise ValueError(f"a person is 'user:N' or 'contact:N', got {value!r}")
        if kind == "user" and int(number) not in account.users:
            raise ValueError(f"user {number} not found")
        return text

    def _people(self, account: Account, value: Any) -> dict[str, list]:
        if not isinstance(value, dict):
            raise ValueError("people are {users:[{id}], groups:[{id}]}")
        users = [self._person_ref(account, item) for item in value.get("users") or []]
        groups = []
        for item in value.get("groups") or []:
            group = as_int(item, "group id")
            if group not in account.groups:
                raise ValueError(f"group {group} not found")
            groups.append(group)
        return {"users": list(dict.fromkeys(users)), "groups": list(dict.fromkeys(groups))}

    def _person_view(self, account: Account, ref: str | None) -> dict[str, str] | None:
        if not ref:
            return None
        kind, _, number = ref.partition(":")
        if kind == "user" and int(number) in account.users:
            return {"id": ref, "name": account.users[int(number)]["name"]}
        return {"id": ref, "name": f"Contact {number}"}

    def _people_view(self, account: Account, people: dict[str, list]) -> dict[str, list]:
        return {
            "users": [self._person_view(account, ref) for ref in people["users"]],
            "groups": [{"id": g, "name": account.groups[g]["name"]} for g in people["groups"]
                       if g in account.groups],
        }

    def _user_name(self, account: Account, user_id: int | None) -> str:
        user = account.users.get(user_id or 0)
        return user["name"] if user else ""

    # -- processes, statuses, users, custom fields --------------------------------------------

    def _process(self, account: Account, process_id: int) -> dict[str, Any]:
        process = account.processes.get(process_id)
        if process is None:
            raise ValueError(f"process {process_id} not found")
        return process

    def _status(self, account: Account, process_id: int, status_id: int) -> dict[str, Any] | None:
        for status in account.processes.get(process_id, {}).get("statuses", []):
            if status["id"] == status_id:
                return status
        return None

    def processes(self, account_name: str, fields: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            account = self.account(account_name)
            return [self._pick({"id": p["id"], "name": p["name"]}, fields) for p in account.processes.values()]

    def statuses(self, account_name: str, process_id: Any, fields: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            account = self.account(account_name)
            try:
                process = account.processes[int(process_id)]
            except (KeyError, TypeError, ValueError):
                raise ApiError(404, 0, f"Process not found by id {process_id}") from None
            views = []
            for status in process["statuses"]:
                view = {"id": status["id"], "name": status["name"], "color": status.get("color", "#ffffff"),
                        "isActive": bool(status.get("isActive", True)),
                        "hasDeadline": bool(status.get("hasDeadline", False)),
                        "isAppliedIndividually": bool(status.get("isAppliedIndividually", False)),
                        "texts": [{"lang": "en", "name": status["name"]}]}
                views.append(self._pick(view, fields))
            return views

    def list_users(self, account_name: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        with self.lock:
            account = self.account(account_name)
            offset, size = page_bounds(body)
            chosen = []
            for user in sorted(account.users.values(), key=lambda u: u["id"]):
                if body.get("onlyActive") and not user["active"]:
                    continue
                if all(self._user_filter(user, flt) for flt in body.get("filters") or []):
                    chosen.append(user)
            views = []
            for user in chosen[offset:offset + size]:
                view = {"id": f"user:{user['id']}" if body.get("prefixedId") else user["id"],
                        "name": user["name"], "lastname": user["lastname"], "email": user["email"],
                        "role": user["role"], "status": "Active" if user["active"] else "Inactive",
                        "login": user["email"].split("@")[0]}
                views.append(self._pick(view, body.get("fields")))
            return views

    @staticmethod
    def _user_filter(user: dict[str, Any], flt: dict[str, Any]) -> bool:
        try:
            kind = int(flt["type"])
        except (KeyError, TypeError, ValueError):
            raise ApiError(400, 41, "a user filter needs a numeric type") from None
        value = str(flt.get("value", ""))
        operator = flt.get("operator", "equal")
        if kind == 9003:
            hit = user["email"].lower() == value.lower()
        elif kind == 9006:
            hit = value.lower() in f"{user['name']} {user['lastname']}".lower()
        elif kind == 9008:
            hit = str(user["id"]) == value.removeprefix("user:")
        else:
            raise ApiError(400, 41, f"user filter type {kind} is not supported by the emulator")
        return hit if operator != "notequal" else not hit

    def custom_fields(self, account_name: str, fields: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            account = self.account(account_name)
            views = []
            for spec in account.custom_fields.values():
                view = {"id": spec["id"], "name": spec.get("name", ""), "type": spec["type"], "objectType": 0,
                        "names": {"en": spec.get("name", "")}}
                if "enumValues" in spec:
                    view["enumValues"] = list(spec["enumValues"])
                views.append(self._pick(view, fields))
            return views
