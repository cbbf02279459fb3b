"""A small client for the emulator's control API, for tests and the demo running in other processes.

The control API is how a test plays "a person in the web UI", injects faults and reads the
request and delivery logs; wrapping it keeps URL shapes in one place.
"""

from __future__ import annotations

from typing import Any

import httpx

# Control calls are local and cheap; anything slower means the emulator is stuck.
CONTROL_TIMEOUT_S = 10.0


class EmulatorControl:
    """EmulatorControl("http://127.0.0.1:PORT").ui_create_task("partner", 2, {"name": "..."})"""

    def __init__(self, base_url: str, *, timeout: float = CONTROL_TIMEOUT_S) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "EmulatorControl":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _call(self, method: str, path: str, *, user: int | None = None, timeout: float | None = None,
              **kwargs: Any) -> dict[str, Any]:
        headers = {"X-Emulator-User": str(user)} if user is not None else None
        extra = {"timeout": timeout} if timeout is not None else {}
        response = self._http.request(method, path, headers=headers, **kwargs, **extra)
        body = response.json()
        if response.status_code >= 400:
            raise RuntimeError(f"emulator control {method} {path}: {response.status_code} {body.get('error')}")
        return body

    # the web UI, acting as USER
    def ui_create_task(self, account: str, user: int, body: dict[str, Any]) -> int:
        return int(self._call("POST", f"/_emulator/{account}/ui/task", user=user, json=body)["id"])

    def ui_update_task(self, account: str, user: int, number: int, body: dict[str, Any]) -> list[dict[str, str]]:
        return self._call("POST", f"/_emulator/{account}/ui/task/{number}", user=user, json=body).get("failures", [])

    def ui_add_comment(self, account: str, user: int, number: int, body: dict[str, Any]) -> int:
        return int(self._call("POST", f"/_emulator/{account}/ui/task/{number}/comments", user=user, json=body)["id"])

    def ui_edit_comment(self, account: str, user: int, comment_id: int, body: dict[str, Any]) -> None:
        self._call("POST", f"/_emulator/{account}/ui/comment/{comment_id}", user=user, json=body)

    def ui_delete_comment(self, account: str, user: int, comment_id: int) -> None:
        self._call("DELETE", f"/_emulator/{account}/ui/comment/{comment_id}", user=user)

    # faults, tokens, users, limits
    def faults(self, account: str) -> dict[str, Any]:
        return self._call("GET", f"/_emulator/{account}/faults")["faults"]

    def set_faults(self, account: str, **faults: Any) -> dict[str, Any]:
        return self._call("POST", f"/_emulator/{account}/faults", json=faults)["faults"]

    def set_limits(self, account: str, *, rate_per_s: float | None = None, daily_quota: int | None = None) -> None:
        self._call("POST", f"/_emulator/{account}/limits", json={"rate_per_s": rate_per_s, "daily_quota": daily_quota})

    def revoke_token(self, account: str, token: str) -> None:
        self._call("POST", f"/_emulator/{account}/tokens/revoke", json={"token": token})

    def restore_token(self, account: str, token: str) -> None:
        self._call("POST", f"/_emulator/{account}/tokens/restore", json={"token": token})

    def deactivate_user(self, account: str, user: int) -> None:
        self._call("POST", f"/_emulator/{account}/users/{user}/deactivate")

    def activate_user(self, account: str, user: int) -> None:
        self._call("POST", f"/_emulator/{account}/users/{user}/activate")

    # logs and state
    def requests(self, account: str, window_s: float = 1.0) -> dict[str, Any]:
        """{"requests": [...], "violations": n, "max_requests_in_window": n}"""
        return self._call("GET", f"/_emulator/{account}/requests", params={"window_s": window_s})

    def deliveries(self, account: str) -> list[dict[str, Any]]:
        return self._call("GET", f"/_emulator/{account}/deliveries")["deliveries"]

    def wait_deliveries_idle(self, account: str, timeout: float = 10.0) -> bool:
        return bool(self._call("POST", f"/_emulator/{account}/deliveries/wait", params={"timeout": timeout},
                               timeout=timeout + CONTROL_TIMEOUT_S)["idle"])

    def tasks(self, account: str) -> list[dict[str, Any]]:
        return self._call("GET", f"/_emulator/{account}/tasks")["tasks"]

    def set_scenarios(self, account: str, scenarios: list[dict[str, Any]]) -> None:
        self._call("POST", f"/_emulator/{account}/scenarios", json={"scenarios": scenarios})
