"""PlanfixClient's checklist methods and card-file listing, against the emulator in-process, with
the emulator's request log as the witness of what was sent (one POST for a failed create)."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from planfix.client import Applied, PartiallyApplied, PlanfixClient, Queued
from planfix.emulator.app import create_app
from planfix.emulator.world import World
from planfix.errors import InvalidRequest, ScopeDenied, TransientError
from tests.conftest import EMULATOR_SEED
from tests.openapi import validate_request

BASE = "http://testserver/partner/rest"
TASK = 1


@pytest.fixture
def world() -> Iterator[World]:
    world = World.from_config(copy.deepcopy(EMULATOR_SEED))
    yield world
    world.close()


@pytest.fixture
def http(world) -> Iterator[TestClient]:
    with TestClient(create_app(world)) as client:
        yield client


def make_client(http, token: str = "tok-partner-sync") -> PlanfixClient:
    client = PlanfixClient(BASE, token, account="partner", http=http)
    client.retry_base_s = 0.001
    return client


@pytest.fixture
def planfix(http) -> PlanfixClient:
    return make_client(http)


def posts(world, suffix: str) -> list[dict]:
    return [r for r in world.requests("partner") if r["method"] == "POST" and r["path"].endswith(suffix)]


def test_create_list_get_update(planfix, world):
    body = {"name": "Draft", "isDone": False}
    validate_request("post", "/task/{id}/checklist", body)
    first = planfix.create_checklist_item(TASK, body)
    second = planfix.create_checklist_item(TASK, {"name": "Sub", "parent": {"id": first}})
    assert list(planfix.list_checklist(TASK)) == [
        {"id": first, "name": "Draft", "isDone": False},
        {"id": second, "name": "Sub", "isDone": False, "parent": {"id": first}}]
    assert isinstance(planfix.update_checklist_item(TASK, first, {"isDone": True}), Applied)
    assert planfix.get_checklist_item(TASK, first) == {"id": first, "name": "Draft", "isDone": True}
    assert world.account("partner").checklist[first]["author"] == 1   # the token's user


def test_list_reads_every_page(planfix, world):
    ids = [world.create_checklist_item("partner", TASK, {"name": f"s{n}"}, author=2) for n in range(7)]
    assert [item["id"] for item in planfix.list_checklist(TASK, page_size=3)] == ids
    assert len(posts(world, "/checklist/list")) == 3   # 3 + 3 + 1: stops at the short page


def test_update_reports_field_failures_and_queued_updates(planfix, world):
    item = world.create_checklist_item("partner", TASK, {"name": "x"}, author=2)
    outcome = planfix.update_checklist_item(TASK, item, {"name": "", "isDone": True})
    assert isinstance(outcome, PartiallyApplied) and [f.field for f in outcome.failures] == ["name"]
    world.set_faults("partner", busy_202=1.0, busy_delay_s=0.01)
    assert isinstance(planfix.update_checklist_item(TASK, item, {"isDone": False}), Queued)


def test_a_failed_create_is_sent_once_and_maybe_applied(planfix, world):
    world.set_faults("partner", error_500_after_commit=1.0)
    with pytest.raises(TransientError) as caught:
        planfix.create_checklist_item(TASK, {"name": "once"})
    assert caught.value.maybe_applied
    assert len(posts(world, f"/task/{TASK}/checklist")) == 1
    world.set_faults("partner")
    assert [item["name"] for item in planfix.list_checklist(TASK)] == ["once"]   # it was applied


def test_bad_requests_and_scopes_are_typed(planfix, http, world):
    with pytest.raises(InvalidRequest) as caught:
        planfix.create_checklist_item(TASK, {"isDone": True})
    assert caught.value.code == 601
    with pytest.raises(InvalidRequest) as caught:
        planfix.update_checklist_item(TASK, 999, {"isDone": True})
    assert caught.value.code == 600
    readonly = make_client(http, "tok-partner-readonly")
    assert list(readonly.list_checklist(TASK)) == []
    with pytest.raises(ScopeDenied):
        readonly.create_checklist_item(TASK, {"name": "x"})
    assert "tok-partner" not in repr(readonly)


def test_card_files_can_be_listed_without_comment_files(planfix, world):
    on_card = world.upload_file("partner", "card.txt", b"card", author=2)
    in_comment = world.upload_file("partner", "comment.txt", b"comment", author=2)
    world.attach_file_to_task("partner", on_card, TASK, author=2)
    world.add_comment("partner", TASK, {"description": "see", "files": [{"id": in_comment}]}, author=2)
    assert {f["id"] for f in planfix.list_task_files(TASK)} == {on_card, in_comment}
    assert [f["id"] for f in planfix.list_task_files(TASK, only_description=True)] == [on_card]
