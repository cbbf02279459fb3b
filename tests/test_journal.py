"""crosslink.journal: the chain and its bundle catch every kind of tampering; the store keeps a
link's entries in one unbroken sequence on SQLite and on PostgreSQL; the commands export and verify.

The mutations are made the way a party rewriting the record would: an entry edited (any field,
with or without its own hash recomputed), deleted, inserted, two entries swapped, the tail cut
off behind an anchor, and an edit with every later hash recomputed (which only an anchor after
it can catch: the anchors in both accounts are what make the chain evidence). What no chain can
show is a tail cut off, or a sealed entry appended, after the last anchor: hence anchors at least
daily and at every sever, resume and rule change.
"""

from __future__ import annotations

import dataclasses
import json
import random
import threading
import uuid
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from crosslink.base.logs import redact
from crosslink.base.settings import get_settings
from crosslink.cli import main
from crosslink.journal.bundle import build_bundle, verify_bundle
from crosslink.journal.chain import (
    GENESIS,
    KINDS,
    Anchor,
    Entry,
    check_chain,
    content_hash,
    next_entry,
    rule_version,
    seal,
)
from crosslink.journal.store import Journal, metadata
from crosslink.lab.demo import example
from schemas.links import parse_links

LINK = "demo"
RULES = "7" * 64
MUTATIONS = 1200
# The machine's PostgreSQL (trust auth); tests create a database of their own and drop it.
POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/"


def make_chain(n: int, rng: random.Random) -> list[Entry]:
    entries: list[Entry] = []
    head = None
    for i in range(n):
        kind = rng.choice(KINDS)
        entry = next_entry(head, link=LINK, at=f"2026-12-07T10:{i // 60:02d}:{i % 60:02d}.000+00:00", kind=kind,
                           side=rng.choice(("partner", "client")),
                           source={"task": rng.randint(1, 9), "comment": rng.randint(1, 99)},
                           target={"task": rng.randint(10, 19)}, content=content_hash({"text": f"t{i}"}), rules=RULES)
        entries.append(entry)
        head = (entry.seq, entry.hash)
    return entries


def anchors_for(entries: list[Entry], seqs: list[int]) -> list[Anchor]:
    return [Anchor(LINK, seq, entries[seq - 1].hash, f"2026-12-07T11:00:0{i}.000+00:00", ("partner", "client")[i % 2],
                   task=1, comment=100 + i) for i, seq in enumerate(seqs)]


def bundle_of(entries: list[Entry], anchors: list[Anchor]) -> dict:
    return build_bundle(LINK, entries, anchors, "2026-12-07T12:00:00.000+00:00")


# What an entry says, as opposed to where it stands in the chain (seq, prev, link).
SAID = ("at", "kind", "side", "source", "target", "content", "rules")


def edited(entry: Entry, rng: random.Random, fields: tuple[str, ...] = (*SAID, "seq", "prev", "link")) -> Entry:
    """ENTRY with one of FIELDS changed as a forger would: a text, a number, an id, a hash."""
    name = rng.choice(fields)
    value = getattr(entry, name)
    if name == "seq":
        changed = value + rng.choice((-1, 1, 2))
    elif name == "kind":
        changed = rng.choice([kind for kind in KINDS if kind != value])
    elif name == "side":
        changed = "client" if value == "partner" else "partner"
    elif name in ("source", "target"):
        changed = {**value, "task": value.get("task", 0) + 1}
    elif name in ("content", "rules", "prev"):
        changed = value[:-1] + ("0" if value[-1] != "0" else "1")
    else:
        changed = value + "x"
    return dataclasses.replace(entry, **{name: changed})


def mutate(entries: list[Entry], anchors: list[Anchor], rng: random.Random) -> tuple[str, dict]:
    """One random tampering with the bundle of ENTRIES and ANCHORS: (its kind, the bundle)."""
    kind = rng.choice(("edit", "edit and reseal", "delete", "insert", "swap", "cut behind an anchor", "rewrite after"))
    entries = list(entries)
    at = rng.randrange(len(entries))
    if kind == "edit":
        entries[at] = edited(entries[at], rng)
    elif kind == "edit and reseal":   # not the last: resealing that is rewriting the unanchored tail
        at = rng.randrange(len(entries) - 1)
        entries[at] = seal(edited(entries[at], rng))
    elif kind == "delete":   # not the last: that is a tail cut, caught behind an anchor only (below)
        del entries[rng.randrange(len(entries) - 1)]
    elif kind == "insert":
        forged = rng.choice(entries)
        entries.insert(at, seal(dataclasses.replace(forged, at=forged.at + "!")) if rng.random() < 0.5 else forged)
    elif kind == "swap":
        other = rng.choice([i for i in range(len(entries)) if i != at])
        entries[at], entries[other] = entries[other], entries[at]
    elif kind == "cut behind an anchor":
        last_anchor = max(anchor.seq for anchor in anchors)
        entries = entries[:rng.randrange(last_anchor)]
    else:  # an edit with every later hash recomputed: caught by an anchor at or after it
        last_anchor = max(anchor.seq for anchor in anchors)
        at = rng.randrange(last_anchor)
        entries = _rechained(entries[:at] + [edited(entries[at], rng, SAID)] + entries[at + 1:], from_=at)
    bundle = bundle_of(entries, anchors)   # the manifest rewritten to match, as a careful forger would
    return kind, bundle


def _rechained(entries: list[Entry], from_: int) -> list[Entry]:
    out = entries[:from_]
    prev = out[-1].hash if out else GENESIS
    for i, entry in enumerate(entries[from_:], start=from_ + 1):
        entry = seal(dataclasses.replace(entry, seq=i, prev=prev, link=LINK))
        out.append(entry)
        prev = entry.hash
    return out


def test_an_untouched_bundle_verifies_and_names_its_head():
    rng = random.Random(7)
    entries = make_chain(40, rng)
    check = verify_bundle(bundle_of(entries, anchors_for(entries, [10, 40])))
    assert check.ok, check.first
    assert check.chain.head == (40, entries[-1].hash) and check.chain.entries == 40


def test_every_one_of_many_random_mutations_is_caught():
    rng = random.Random(20261207)
    caught: Counter = Counter()
    for _ in range(MUTATIONS):
        entries = make_chain(rng.randint(3, 60), rng)
        seqs = sorted(rng.sample(range(2, len(entries) + 1), k=min(2, len(entries) - 1)))
        anchors = anchors_for(entries, seqs)
        kind, bundle = mutate(entries, anchors, rng)
        check = verify_bundle(bundle)
        assert not check.ok, (kind, bundle["manifest"])
        assert check.first
        caught[kind] += 1
    assert sum(caught.values()) == MUTATIONS and len(caught) == 7 and min(caught.values()) >= 100, caught


@given(st.integers(min_value=1, max_value=30), st.data())
def test_an_edited_entry_is_the_first_named(n, data):
    entries = make_chain(n, random.Random(n))
    at = data.draw(st.integers(min_value=0, max_value=n - 1))
    entries[at] = dataclasses.replace(entries[at], content="f" * 64)
    [failure] = check_chain(LINK, entries).failures
    assert failure.position == at + 1 and failure.seq == at + 1


def test_the_rule_version_follows_the_rules_not_the_deployment():
    config = parse_links(yaml.safe_dump(example("links.yaml")))
    link = config.links[0]
    moved = dataclasses.replace(link, sides={name: dataclasses.replace(side, base_url="https://elsewhere.example",
                                                                       token_env="OTHER_TOKEN")
                                             for name, side in link.sides.items()})
    assert rule_version(moved) == rule_version(link)
    narrowed = dataclasses.replace(link, comments=dataclasses.replace(link.comments, exclude="^internal:"))
    assert rule_version(narrowed) != rule_version(link)


def test_an_unknown_kind_is_refused_before_it_is_stored():
    with pytest.raises(ValueError, match="unknown journal entry kind"):
        next_entry(None, link=LINK, at="x", kind="gossip", side="partner", source={}, target={}, content="", rules="")


# --- the store --------------------------------------------------------------------------------


def _fill(journal: Journal, link: str, count: int, side: str = "partner") -> None:
    for i in range(count):
        journal.append(link, kind="comment", side=side, source={"task": 5, "comment": i},
                       target={"task": 12, "comment": 1000 + i}, content=content_hash({"text": i}), rules=RULES)


def _schema_is_the_stores(journal: Journal) -> None:
    """What the migrations made is what the store's queries assume (names, types, keys, indexes)."""
    with journal.engine.connect() as connection:
        context = MigrationContext.configure(connection)
        assert compare_metadata(context, metadata) == []


def _store_keeps_one_unbroken_chain(journal: Journal) -> None:
    _schema_is_the_stores(journal)
    threads = [threading.Thread(target=_fill, args=(journal, LINK, 40, side)) for side in ("partner", "client")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    _fill(journal, "other", 3)
    entries = journal.entries(LINK)
    assert [entry.seq for entry in entries] == list(range(1, 81))
    assert check_chain(LINK, entries).ok
    assert journal.head(LINK) == (80, entries[-1].hash)
    assert len(journal.entries("other")) == 3 and check_chain("other", journal.entries("other")).ok
    # One task's history across both sides: the partner's task 5 and the client's task 12 are one pair.
    assert len(journal.entries(LINK, side="partner", task=5)) == 40
    assert len(journal.entries(LINK, side="client", task=12)) == 40
    anchor = Anchor(LINK, 80, entries[-1].hash, "2026-12-07T12:00:00.000+00:00", "client", task=3, comment=9)
    journal.add_anchor(anchor)
    assert journal.anchors(LINK) == [anchor]


def test_the_sqlite_store_keeps_one_unbroken_chain_per_link_under_concurrent_appends(tmp_path):
    url = f"sqlite:///{tmp_path / 'journal.sqlite3'}"
    journal = Journal(url)
    try:
        _store_keeps_one_unbroken_chain(journal)
    finally:
        journal.close()
    reopened = Journal(url)      # migrations are idempotent; the entries are still there
    try:
        assert reopened.head(LINK)[0] == 80
    finally:
        reopened.close()


@pytest.fixture
def postgres_url():
    name = f"crosslink_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES + "postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        pytest.skip(f"no PostgreSQL at 127.0.0.1:5432 to test the journal on ({type(exc).__name__})")
    try:
        yield POSTGRES + name
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_the_postgresql_store_keeps_one_unbroken_chain_per_link_under_concurrent_appends(postgres_url):
    journal = Journal(postgres_url)
    try:
        _store_keeps_one_unbroken_chain(journal)
    finally:
        journal.close()


def test_the_database_password_in_the_url_is_masked_in_logs():
    """Compose puts the password in CROSSLINK_JOURNAL_URL: an error that repeated it must not log it."""
    password = f"journal-{uuid.uuid4().hex}"
    with pytest.raises(sa.exc.OperationalError):
        Journal(f"postgresql+psycopg://crosslink:{password}@127.0.0.1:1/crosslink?connect_timeout=2")
    assert password not in redact(f"connection to crosslink:{password}@127.0.0.1 failed")


# --- the commands -----------------------------------------------------------------------------


@pytest.fixture
def journal_env(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'journal.sqlite3'}"
    monkeypatch.setenv("CROSSLINK_JOURNAL_URL", url)
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def test_export_then_verify_and_a_tampered_export_names_the_entry(tmp_path, journal_env):
    url = journal_env
    journal = Journal(url)
    _fill(journal, LINK, 12)
    journal.close()
    out = tmp_path / "demo-journal.json"
    runner = CliRunner()
    exported = runner.invoke(main, ["journal", "export", "--link", LINK, "--out", str(out)])
    assert exported.exit_code == 0, exported.output
    verified = runner.invoke(main, ["journal", "verify", str(out)])
    assert verified.exit_code == 0 and "OK, link demo, 12 entries" in verified.output, verified.output
    shown = runner.invoke(main, ["journal", "show", "--link", LINK, "--side", "client", "--task", "12", "--json"])
    assert [json.loads(line)["seq"] for line in shown.output.splitlines()] == list(range(1, 13))

    bundle = json.loads(out.read_text(encoding="utf-8"))
    bundle["entries"][6]["target"]["comment"] = 1
    Path(out).write_text(json.dumps(bundle), encoding="utf-8")
    tampered = runner.invoke(main, ["journal", "verify", str(out)])
    assert tampered.exit_code == 1 and "entry 7 (seq 7)" in tampered.output and "edited" in tampered.output
