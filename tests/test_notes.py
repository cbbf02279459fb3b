"""The notes' texts: every kind in every language, each side in its own, the other side by its label."""

from __future__ import annotations

import string
from dataclasses import replace
from pathlib import Path

import pytest

from schemas.links import NOTE_LANGUAGES, load_links
from workers.notes import REMOVALS, TEXTS, is_note, note, rule_text

EXAMPLE = Path(__file__).resolve().parents[1] / "crosslink" / "examples" / "links.yaml"
LINK = load_links(EXAMPLE).links[0]
RUSSIAN_CLIENT = replace(LINK, sides={**LINK.sides, "client": replace(LINK.sides["client"], language="ru")})


def fields_of(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_every_language_has_every_kind_with_the_same_blanks():
    english = TEXTS["en"]
    for language in NOTE_LANGUAGES:
        assert set(TEXTS[language]) == set(english), language
        for kind, text in english.items():
            assert fields_of(TEXTS[language][kind]) == fields_of(text), (language, kind)


def test_each_side_reads_its_own_language_and_the_other_side_by_its_label():
    to_partner = note(RUSSIAN_CLIENT, "partner", "removed", other="client", number=7, how="trashed")
    to_client = note(RUSSIAN_CLIENT, "client", "removed", other="partner", number=5, how="trashed")
    assert to_partner == ("Crosslink: this task's counterpart at Client Co (#7) was moved to the trash there. "
                          "This task stays as it is, with everything it holds; changes here are no longer "
                          "carried there.")
    assert "«ACME Consulting» (#5) там перемещена в корзину" in to_client
    assert is_note(to_partner) and is_note(to_client) and not is_note("Agreed: v1")
    assert rule_text(RUSSIAN_CLIENT, "client", "partner") == "поле принадлежит стороне «ACME Consulting»"
    assert rule_text(LINK, "partner", None) == "with no owner, the later change wins"


@pytest.mark.parametrize("how", REMOVALS)
def test_every_removal_has_words_in_every_language(how):
    assert all(TEXTS[language][how] for language in NOTE_LANGUAGES)
    assert TEXTS["ru"][how] != TEXTS["en"][how]


def test_a_language_the_notes_do_not_speak_is_refused(tmp_path):
    from schemas.links import ConfigError

    text = EXAMPLE.read_text(encoding="utf-8").replace("language: en", "language: de", 1)
    path = tmp_path / "links.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as refused:
        load_links(path)
    assert "sides.partner.language" in str(refused.value) and "en, ru" in str(refused.value)
