"""How an emulated world comes to be, and who may act in it: accounts, their tokens and users.

A world is built from the YAML/dict seed (`World.from_config`), one account at a time; after that,
every REST call names a token, and `authenticate` turns it into the user it acts as. The control
API and the tests revoke tokens and deactivate users here to show the sync what a broken
credential looks like.

Leans on other parts through `self`: seeding a task is the tasks part's `_create_task`, checking a
seeded scenario the events part's `_check_scenario`.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any, Callable, Self

import yaml

from planfix.emulator import scenarios as scenario_mod
from planfix.emulator.world.base import PEOPLE_FIELDS, Account, ApiError, Token, WorldCore


class AccountsMixin(WorldCore):
    """Building the world from its seed; tokens and users, the gate every request passes."""

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_yaml(cls, path: str | Path, **kwargs: Any) -> Self:
        with open(path, encoding="utf-8") as handle:
            return cls.from_config(yaml.safe_load(handle) or {}, **kwargs)

    @classmethod
    def from_config(cls, config: dict[str, Any], *, clock: Callable[[], float] | None = None) -> Self:
        """A world seeded from the YAML/dict format in the emulator brief; bad seeds raise ValueError."""
        if not isinstance(config, dict):
            raise ValueError("emulator config must be a mapping")
        world = cls(time_scale=float(config.get("time_scale", 1.0)), clock=clock or time.time,
                    seed=int(config.get("seed", 0)),
                    delivery_timeout_s=float(config.get("delivery_timeout_s",
                                                        scenario_mod.DEFAULT_DELIVERY_TIMEOUT_S)))
        for name, spec in (config.get("accounts") or {}).items():
            try:
                world.add_account(str(name), spec or {})
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"account {name!r}: {exc}") from exc
        return world

    def add_account(self, name: str, spec: dict[str, Any]) -> Account:
        limits = spec.get("limits") or {}
        account = Account(name=name, domain=str(spec.get("domain") or f"{name}.planfix.com"),
                          rate_per_s=(float(limits["rate_per_s"]) if limits.get("rate_per_s") else None),
                          daily_quota=(int(limits["daily_quota"]) if limits.get("daily_quota") else None),
                          rng=random.Random(f"{self.seed}:{name}"))
        for entry in spec.get("tokens") or []:
            scopes = entry.get("scopes", "all")
            allowed = None if scopes in ("all", None) or "all" in scopes else frozenset(scopes)
            account.tokens[str(entry["token"])] = Token(str(entry["token"]), int(entry["user"]), allowed)
        for user in spec.get("users") or []:
            account.users[int(user["id"])] = {
                "id": int(user["id"]), "name": str(user["name"]), "email": user.get("email", ""),
                "role": user.get("role", "User"), "active": bool(user.get("active", True)),
                "lastname": user.get("lastname", ""),
            }
        for group in spec.get("groups") or []:
            account.groups[int(group["id"])] = {"id": int(group["id"]), "name": str(group["name"])}
        for process in spec.get("processes") or []:
            transitions = process.get("transitions")
            account.processes[int(process["id"])] = {
                "id": int(process["id"]), "name": str(process["name"]),
                "statuses": [dict(status, id=int(status["id"])) for status in process["statuses"]],
                "transitions": ({int(k): {int(v) for v in vs} for k, vs in transitions.items()}
                                if transitions is not None else None),
            }
        for project in spec.get("projects") or []:
            account.projects[int(project["id"])] = {"id": int(project["id"]), "name": str(project["name"])}
        for template in spec.get("templates") or []:
            account.templates[int(template["id"])] = dict(template, id=int(template["id"]))
        for custom in spec.get("custom_fields") or []:
            account.custom_fields[int(custom["id"])] = dict(custom, id=int(custom["id"]),
                                                            type=int(custom.get("type", 0)))
        if not account.users:
            raise ValueError("an account needs at least one user")
        with self.lock:
            self.accounts[name] = account
            for seeded in spec.get("tasks") or []:
                self._seed_task(account, seeded)
            account.scenarios = [self._check_scenario(s) for s in spec.get("scenarios") or []]
        return account

    def _seed_task(self, account: Account, seeded: dict[str, Any]) -> None:
        body = {key: value for key, value in seeded.items() if key not in ("id", "author")}
        for key in ("status", "project", "template", "parent"):
            if key in body and not isinstance(body[key], dict):
                body[key] = {"id": body[key]}
        for key in PEOPLE_FIELDS:
            if isinstance(body.get(key), list):
                body[key] = {"users": [{"id": ref} for ref in body[key]]}
        author = int(str(seeded.get("author", next(iter(account.users)))).removeprefix("user:"))
        number = int(seeded["id"])
        self._create_task(account, body, author, number=number, emit=False)

    # -- tokens and users ---------------------------------------------------------------------

    def authenticate(self, account_name: str, token: str | None, scope: str | None) -> int:
        """The user a token acts as; ApiError 401 code 1 / 403 code 16 / 405 code 5 otherwise."""
        with self.lock:
            account = self.account(account_name)
            entry = account.tokens.get(token or "")
            if entry is None or entry.revoked:
                raise ApiError(401, 1, "Invalid or revoked token")
            user = account.users.get(entry.user)
            if user is None or not user["active"]:
                raise ApiError(403, 16, "The token's user is inactive")
            if not entry.allows(scope):
                raise ApiError(405, 5, "Scope denied, method not allowed")
            return entry.user

    def _token(self, account_name: str, token: str) -> Token:
        try:
            return self.account(account_name).tokens[token]
        except KeyError:
            raise ValueError("no such token in this account") from None

    def revoke_token(self, account_name: str, token: str) -> None:
        with self.lock:
            self._token(account_name, token).revoked = True

    def restore_token(self, account_name: str, token: str) -> None:
        with self.lock:
            self._token(account_name, token).revoked = False

    def _user(self, account_name: str, user_id: int) -> dict[str, Any]:
        user = self.account(account_name).users.get(int(user_id))
        if user is None:
            raise ValueError(f"no user {user_id} in account {account_name}")
        return user

    def deactivate_user(self, account_name: str, user_id: int) -> None:
        with self.lock:
            self._user(account_name, user_id)["active"] = False

    def activate_user(self, account_name: str, user_id: int) -> None:
        with self.lock:
            self._user(account_name, user_id)["active"] = True
