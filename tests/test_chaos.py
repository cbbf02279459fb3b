"""crosslink.chaos, the parts that need no stack: the fault windows it opens in the emulator."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import crosslink.chaos as chaos
from crosslink.chaos import Chaos, ChaosPlan, build_configs
from planfix.emulator.world import World


def test_overlapping_fault_windows_keep_each_others_faults(tmp_path, monkeypatch):
    """The emulator replaces an account's faults as a whole: a busy_202 window opening inside a
    quota window once turned the quota fault off for good, and the quota window met no request."""
    monkeypatch.setattr(chaos, "FAULT_WINDOW_S", (0.3, 0.3))
    plan = ChaosPlan.quick()
    emulator, _ = build_configs(plan.links)
    world = World.from_config(emulator)
    run = Chaos(plan, tmp_path)
    run.stack = SimpleNamespace(world=world)
    try:
        quota = threading.Thread(target=run._emulator_window, kwargs={"quota_exhausted": True})
        quota.start()
        time.sleep(0.1)
        busy = threading.Thread(target=run._emulator_window, kwargs={"busy_202": 0.3})
        busy.start()
        time.sleep(0.1)
        for account in run.accounts():  # both open
            assert world.faults(account)["quota_exhausted"] and world.faults(account)["busy_202"] == 0.3
        quota.join()
        for account in run.accounts():  # the quota window closed, the other one is still open
            assert not world.faults(account)["quota_exhausted"] and world.faults(account)["busy_202"] == 0.3
        busy.join()
        assert all(not world.faults(account)["busy_202"] for account in run.accounts())
    finally:
        world.close()
