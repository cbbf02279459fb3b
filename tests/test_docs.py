"""The operator docs say what the code does: the scenario bodies an admin pastes, the links.yaml
example they start from, and the files they are pointed at.

An admin copies docs/planfix-setup.md into Planfix by hand; a body template that drifted from
producers/scenarios.py would be answered 200 and then rejected, event after event, and an example
that no longer lints would be the first thing a newcomer trips on.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from producers.scenarios import EVENT_BODIES
from schemas.links import lint_file

ROOT = Path(__file__).resolve().parents[1]
SETUP = ROOT / "docs" / "planfix-setup.md"
DOCS = [ROOT / "README.md", SETUP, ROOT / "docs" / "architecture.md"]
_BLOCK = re.compile(r"```(?P<lang>\w*)\n(?P<body>.*?)```", re.DOTALL)
# A repository path in backticks: `crosslink/queue/enqueue.py`, `deploy/demo/`, `docker-compose.yml`.
_PATH = re.compile(r"`([A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]*)*)`")


def blocks(path: Path, lang: str) -> list[str]:
    return [m.group("body") for m in _BLOCK.finditer(path.read_text(encoding="utf-8"))
            if m.group("lang") == lang]


@pytest.mark.parametrize("event", sorted(EVENT_BODIES))
def test_setup_guide_gives_each_scenario_body_verbatim(event):
    assert EVENT_BODIES[event] in [body.strip() for body in blocks(SETUP, "text")]


def test_setup_guide_gives_no_other_body():
    assert len(blocks(SETUP, "text")) == len(EVENT_BODIES)


def test_setup_guides_links_example_lints_clean(tmp_path):
    (example,) = blocks(SETUP, "yaml")
    path = tmp_path / "links.yaml"
    path.write_text(example, encoding="utf-8")
    assert lint_file(path) == []


@pytest.mark.parametrize("doc", DOCS, ids=[doc.name for doc in DOCS])
def test_files_the_docs_name_exist(doc):
    top = {entry.name for entry in ROOT.iterdir()}
    named = [path for path in _PATH.findall(doc.read_text(encoding="utf-8"))
             if path.split("/")[0] in top and ("/" in path or "." in path)]
    assert named, "the scan finds no paths: the pattern is broken"
    missing = [path for path in named if not (ROOT / path).exists()]
    assert not missing, f"{doc.name} names files that do not exist: {missing}"
