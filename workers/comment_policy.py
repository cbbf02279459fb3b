"""Which comments cross to the other account, and how a mirrored comment reads there.

A mirror is written by the integration user, so it must say who really wrote it, on which side and
when (the link's ``header`` template). It is marked (``MIRROR_MARK``) so that a mirror is never
mirrored back, even if the caller's author check missed it. A comment deleted at its source is not
deleted in the other account (that would destroy what people there already read and answered):
its mirror is rewritten with the ``withdrawn`` notice above the original text. Nor does an edit
at the source erase what the other side read: the mirror shows the current text, and below it
every earlier version, newest first, each saying until when the source side had it.

Assumptions:
- include/exclude are matched (re.search) against the comment's plain text: tags removed,
  entities unescaped, surrounding whitespace stripped, so "^#internal" means "starts with".
- exclude always wins; include is only consulted in mode ``matching``.
- Planfix may rewrite HTML (the marker is an HTML comment) [verify]; callers also skip comments by
  the integration user and comments registered as mirrors.
- Author names and times are plain text and are HTML-escaped before going into templates.
"""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Sequence
from functools import lru_cache

from schemas.links import Link

MIRROR_MARK = "<!--crosslink:mirror-->"
WITHDRAWN_MARK = "<!--crosslink:withdrawn-->"
EARLIER_MARK = "<!--crosslink:earlier-->"
# Above each earlier version of a mirrored comment, in the reading side's language (links.yaml).
EARLIER_LABEL = {
    "en": "Earlier version, as {side_label} had it until {time}:",
    "ru": "Прежняя версия, как она была у стороны «{side_label}» до {time}:",
}
_TAG = re.compile(r"<[^>]*>")


def plain_text(html: str) -> str:
    return html_lib.unescape(_TAG.sub("", html or "")).strip()


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def is_mirror(html: str | None) -> bool:
    return bool(html) and MIRROR_MARK in html


def should_mirror(link: Link, source_side: str, text: str) -> bool:
    """Whether a comment on SOURCE_SIDE with HTML TEXT is mirrored to the other side."""
    if is_mirror(text):
        return False
    policy = link.comments
    plain = plain_text(text)
    if policy.exclude and _compiled(policy.exclude).search(plain):
        return False
    held = link.sides[source_side].send.exclude_comments
    if held and _compiled(held).search(plain):
        return False  # the source side holds it back by its own rule
    if policy.mode == "matching":
        return bool(policy.include) and bool(_compiled(policy.include).search(plain))
    return True


def _fill(template: str, link: Link, source_side: str, author: str, time_str: str) -> str:
    return template.format(
        author=html_lib.escape(author or ""),
        side_label=html_lib.escape(link.comments.side_labels.get(source_side, source_side)),
        side=source_side,
        time=html_lib.escape(time_str or ""),
    )


def render_mirror(link: Link, source_side: str, author_name: str, time_str: str, html: str,
                  earlier: Sequence[tuple[str, str]] = ()) -> str:
    """The mirror's HTML: marker, header naming the real author, the original HTML, then EARLIER
    versions of it (html, until when it stood), newest first, each under its label."""
    label = EARLIER_LABEL[link.sides[link.other(source_side)].language]
    folded = "".join(f"<br><br>{EARLIER_MARK}<i>{_fill(label, link, source_side, '', until)}</i>"
                     f"<blockquote>{old or ''}</blockquote>" for old, until in reversed(earlier))
    return MIRROR_MARK + _fill(link.comments.header, link, source_side, author_name, time_str) + (html or "") + folded


def render_withdrawn(link: Link, source_side: str, original_mirror_html: str, time_str: str) -> str:
    """The mirror's HTML once its source was deleted: the notice above the mirror as it was.

    Idempotent: withdrawing an already withdrawn mirror returns it unchanged.
    """
    if WITHDRAWN_MARK in (original_mirror_html or ""):
        return original_mirror_html
    body = (original_mirror_html or "").replace(MIRROR_MARK, "")
    notice = _fill(link.comments.withdrawn, link, source_side, "", time_str)
    return MIRROR_MARK + WITHDRAWN_MARK + notice + body
