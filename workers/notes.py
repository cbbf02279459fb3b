"""The notes Crosslink writes on a task where the two sides differ, in the language of the side
whose people read them (links.yaml, each side's `language`: en or ru; English by default).

A note names the other side by the link's comment label for it (`comments.side_labels`), as
comment mirrors do, so people read their partner's or client's name, not "partner" or "client".
Pure: the texts and their filling; workers.sync and workers.tasks decide when to write one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from schemas.links import NOTE_LANGUAGES, Link

# Every note starts with its language's prefix: people (and tests) tell the robot's notes by it.
TEXTS: Mapping[str, Mapping[str, str]] = {
    "en": {
        "prefix": "Crosslink: ",
        "held_status_source": "this task's move to status {moved_to} was not carried to {other}, whose copy stays "
                              "at status {stays_at}: {why}. The two sides differ until one of them moves to a "
                              "status the other can follow.",
        "held_status_target": "at {other} this task moved to status {moved_to}. This copy stays at status "
                              "{stays_at}, as its process does not allow that move: {why}.",
        "lost_edit": "the change of {field} made here, to {value}, was replaced by the change {other} made to "
                     "the same field ({rule}).",
        "owner_rule": "{owner} owns it",
        "no_owner_rule": "with no owner, the later change wins",
        "removed": "this task's counterpart at {other} (#{number}) was {how} there. This task stays as it is, "
                   "with everything it holds; changes here are no longer carried there.",
        "deleted": "deleted",
        "trashed": "moved to the trash",
        "out_of_scope": "moved out of the link's scope",
        "copy_deleted": "{other} deleted its copy of a comment of this task ({excerpt}). The comment stays here.",
        "cut": "the link lost its access to {other} ({reason}). Changes made here are kept and will be carried "
               "there once access is back; nothing is deleted on either side.",
        "resumed": "access to {other} is back. The changes made here meanwhile are being carried there now.",
        "journal_head": "The link's journal at this moment: entry #{seq}, SHA-256 {hash}.",
        "paused": "{other} paused everything it sends to this account. Nothing is lost: what changes there "
                  "meanwhile arrives here, in order, once {other} resumes.",
        "unpaused": "{other} resumed sending to this account: what changed there meanwhile is arriving now.",
        "word_refused": "your word on version {version} of the link's rules was not counted: {why}.",
        "word_approve": "{other} approved version {version} of the link's rules; it is {state} until this side "
                        "approves it too (write «approve v{version}» here).",
        "word_reject": "{other} rejected version {version} of the link's rules: it is {state}; the version in "
                       "force stays.",
        "in_force": "version {version} of the link's rules is in force from now: both sides approved it.",
        "proposal": "version {version} of the link's rules is proposed. It changes:{diff}It takes effect once "
                    "{needs} approved it; until then the version in force stays. To approve, an approver of "
                    "this side writes «approve v{version}» here; «reject v{version}» rejects it.",
    },
    "ru": {
        "prefix": "Crosslink: ",
        "held_status_source": "перевод этой задачи в статус {moved_to} не перенесён на сторону «{other}»: там "
                              "копия остаётся в статусе {stays_at} ({why}). Стороны расходятся, пока одна из "
                              "них не перейдёт в статус, доступный другой.",
        "held_status_target": "на стороне «{other}» эта задача переведена в статус {moved_to}. Эта копия "
                              "остаётся в статусе {stays_at}: её процесс не допускает такого перехода ({why}).",
        "lost_edit": "изменение поля {field}, сделанное здесь ({value}), заменено изменением того же поля на "
                     "стороне «{other}» ({rule}).",
        "owner_rule": "поле принадлежит стороне «{owner}»",
        "no_owner_rule": "у поля нет владельца, побеждает более позднее изменение",
        "removed": "парная задача на стороне «{other}» (#{number}) там {how}. Эта задача остаётся как есть, со "
                   "всем содержимым; изменения здесь туда больше не переносятся.",
        "deleted": "удалена",
        "trashed": "перемещена в корзину",
        "out_of_scope": "выведена из области связи",
        "copy_deleted": "на стороне «{other}» удалена копия комментария этой задачи ({excerpt}). Здесь "
                        "комментарий остаётся.",
        "cut": "связь потеряла доступ к стороне «{other}» ({reason}). Изменения здесь сохраняются и будут "
               "перенесены, когда доступ вернётся; ни на одной стороне ничего не удаляется.",
        "resumed": "доступ к стороне «{other}» восстановлен. Изменения, сделанные здесь за это время, "
                   "переносятся туда.",
        "journal_head": "Журнал связи на этот момент: запись №{seq}, SHA-256 {hash}.",
        "paused": "сторона «{other}» приостановила всё, что отправляет в этот аккаунт. Ничего не теряется: "
                  "изменения, сделанные там за это время, придут сюда по порядку, когда отправка возобновится.",
        "unpaused": "сторона «{other}» возобновила отправку в этот аккаунт: изменения, сделанные там за это "
                    "время, переносятся сюда.",
        "word_refused": "ваше решение по версии {version} правил связи не учтено: {why}.",
        "word_approve": "сторона «{other}» одобрила версию {version} правил связи; она {state}, пока эта "
                        "сторона тоже её не одобрит (напишите здесь «approve v{version}»).",
        "word_reject": "сторона «{other}» отклонила версию {version} правил связи: она {state}; действует "
                       "прежняя версия.",
        "in_force": "версия {version} правил связи действует с этого момента: обе стороны её одобрили.",
        "proposal": "предложена версия {version} правил связи. Она меняет:{diff}Она вступит в силу, когда её "
                    "одобрят: {needs}; до тех пор действует прежняя версия. Чтобы одобрить, согласующий этой "
                    "стороны пишет здесь «approve v{version}»; «reject v{version}» — отклонить.",
    },
}
assert set(TEXTS) == set(NOTE_LANGUAGES)

# How a paired task left the link (workers.sync), as TEXTS names it.
REMOVALS = ("deleted", "trashed", "out_of_scope")


def label(link: Link, side: str) -> str:
    """SIDE as people of the link call it (its comment label)."""
    return link.comments.side_labels.get(side, side)


def note(link: Link, reader: str, kind: str, **values: Any) -> str:
    """The note of KIND for people of side READER, in READER's language; OTHER (a side name) is
    shown by its label, and the values TEXTS names as words (a removal, a rule) in that language."""
    texts = TEXTS[link.sides[reader].language]
    shown = dict(values)
    for key in ("other", "owner"):
        if key in shown:
            shown[key] = label(link, shown[key])
    if shown.get("how") in REMOVALS:
        shown["how"] = texts[shown["how"]]
    return texts["prefix"] + texts[kind].format(**shown)


def head_text(link: Link, reader: str, head: tuple[int, str]) -> str:
    """The journal's HEAD (sequence, hash) as a note states it, for people of side READER."""
    seq, digest = head
    return TEXTS[link.sides[reader].language]["journal_head"].format(seq=seq, hash=digest)


def rule_text(link: Link, reader: str, owner: str | None) -> str:
    """The rule that decided a contested field, for people of side READER."""
    texts = TEXTS[link.sides[reader].language]
    return texts["owner_rule"].format(owner=label(link, owner)) if owner else texts["no_owner_rule"]


def is_note(text: str) -> bool:
    """Whether a comment's plain TEXT is one of the robot's notes, in any language."""
    return any(text.startswith(texts["prefix"]) for texts in TEXTS.values())
