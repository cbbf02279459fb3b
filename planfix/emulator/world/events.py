"""What a change in the world sets off: each account's scenarios, rendered and queued for delivery.

In Planfix a scenario ("on task changed, send this HTTP request") is how the sync hears of a
change: the webhook it receives. Every write in the world ends in `_emit`, which picks the
account's matching scenarios, fills their `{{...}}` variables from the task as it is at that
moment, and hands the requests to the dispatcher in planfix/emulator/scenarios.py, which delivers
them (and may fail to, as Planfix may).

Leans on the directory through `self` for the names a scenario's variables show (`_status`,
`_person_view`, `_user_name`).
"""

from __future__ import annotations

import json
from typing import Any

from planfix.emulator import scenarios as scenario_mod
from planfix.emulator.world.base import Account, WorldCore


class EventsMixin(WorldCore):
    """Each account's scenarios, and the firing of them on every change."""

    @staticmethod
    def _check_scenario(spec: dict[str, Any]) -> dict[str, Any]:
        scenario = dict(spec)
        if scenario.get("event") not in scenario_mod.EVENTS:
            raise ValueError(f"scenario event must be one of {scenario_mod.EVENTS}, got {scenario.get('event')!r}")
        if not scenario.get("url"):
            raise ValueError("scenario needs a url")
        scenario.setdefault("name", scenario["event"])
        scenario.setdefault("method", "POST")
        scenario.setdefault("content_type", "application/json")
        scenario.setdefault("body", "")
        return scenario

    def set_scenarios(self, account_name: str, scenario_specs: list[dict[str, Any]]) -> None:
        checked = [self._check_scenario(spec) for spec in scenario_specs]
        with self.lock:
            self.account(account_name).scenarios = checked

    def _variables(self, account: Account, task: dict[str, Any], author: int,
                   comment_id: int | None) -> dict[str, str]:
        status = self._status(account, task["processId"], task["status"]) or {}
        project = account.projects.get(task["project"] or 0)
        assignees = [self._person_view(account, ref)["name"] for ref in task["assignees"]["users"]]
        return {
            "Задача.Номер": str(task["id"]),
            "Задача.Идентификатор": str(task["internal_id"]),
            "Задача.Название": task["name"],
            "Задача.Статус": status.get("name", ""),
            "Задача.Статус.Идентификатор": str(task["status"]),
            "Задача.Проект": project["name"] if project else "",
            "Задача.Исполнители.Пользователи": json.dumps(assignees, ensure_ascii=False, separators=(",", ":")),
            "Системные.Домен аккаунта": account.domain,
            "ID добавленного комментария": str(comment_id) if comment_id else "",
            "Автор изменения": self._user_name(account, author),
        }

    def _emit(self, account: Account, event: str, task: dict[str, Any], author: int,
              comment_id: int | None = None) -> None:
        """Queue every matching scenario's request; values are read now, at event time."""
        matching = [s for s in account.scenarios if s["event"] == event
                    and str(s.get("unless_author") or "") != f"user:{author}"
                    and (s.get("project") is None or int(s["project"]) == (task["project"] or 0))]
        if not matching:
            return
        variables = self._variables(account, task, author, comment_id)
        for scenario in matching:
            auth = scenario.get("basic_auth")
            self.dispatcher.enqueue(scenario_mod.Outgoing(
                seq=0, account=account.name, scenario=scenario["name"], event=event, task=task["id"],
                method=str(scenario["method"]).upper(),
                url=scenario_mod.render(scenario["url"], variables, url=True),
                body=scenario_mod.render(scenario["body"], variables),
                content_type=scenario["content_type"], headers=dict(scenario.get("headers") or {}),
                basic_auth=(str(auth["username"]), str(auth["password"])) if auth else None,
                timeout_s=float(scenario.get("timeout_s") or self.delivery_timeout_s),
            ))

    def deliveries(self, account_name: str) -> list[dict[str, Any]]:
        self.account(account_name)
        return self.dispatcher.deliveries(account_name)

    def wait_deliveries_idle(self, timeout: float = 10.0) -> bool:
        return self.dispatcher.wait_idle(timeout)
