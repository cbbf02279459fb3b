"""The Planfix automation scenarios each side needs, as the producer expects them.

One scenario per event (task created, task changed, comment added), each sending a small body
with the task *number* ({{Задача.Номер}}, never the internal id) and, for comments, the comment
id, under the condition "change author is not the integration user" so the sync's own writes
never come back. docs/planfix-setup.md tells admins to paste exactly these; the demo and the tests
configure the emulator with them.
"""

from __future__ import annotations

import base64
from typing import Any

EVENT_BODIES = {
    "task_created": '{"event": "task_created", "task": "{{Задача.Номер}}", "account": "{{Системные.Домен аккаунта}}"}',
    "task_changed": '{"event": "task_changed", "task": "{{Задача.Номер}}", "account": "{{Системные.Домен аккаунта}}"}',
    "comment_added": '{"event": "comment_added", "task": "{{Задача.Номер}}", "comment": "{{ID добавленного комментария}}", "account": "{{Системные.Домен аккаунта}}"}',
}
SECRET_HEADER = "X-Crosslink-Secret"
BASIC_USER = "planfix"


def hook_path(link: str, side: str) -> str:
    return f"/hooks/{link}/{side}"


def request_auth(auth_mode: str, secret: str) -> dict[str, str]:
    """The HTTP headers a correctly set up scenario of a side sends with every request."""
    if auth_mode == "basic":
        return {"Authorization": "Basic " + base64.b64encode(f"{BASIC_USER}:{secret}".encode()).decode()}
    return {SECRET_HEADER: secret}


def scenarios_for_side(producer_url: str, link: str, side: str, auth_mode: str, secret: str,
                       integration_user: str) -> list[dict[str, Any]]:
    """Scenario definitions in the emulator's seed format (and the setup guide's terms)."""
    auth: dict[str, Any]
    if auth_mode == "basic":
        auth = {"basic_auth": {"username": BASIC_USER, "password": secret}}
    else:
        auth = {"headers": {SECRET_HEADER: secret}}
    return [
        {
            "name": f"Crosslink {link}: {event.replace('_', ' ')}",
            "event": event,
            "url": producer_url.rstrip("/") + hook_path(link, side),
            "method": "POST",
            "content_type": "application/json",
            "body": body,
            "unless_author": integration_user,
            **auth,
        }
        for event, body in EVENT_BODIES.items()
    ]
