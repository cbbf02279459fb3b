"""Comment policy: what is mirrored, how a mirror and a withdrawn mirror read."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.links import load_links
from workers.comment_policy import MIRROR_MARK, is_mirror, plain_text, render_mirror, render_withdrawn, should_mirror

EXAMPLE = Path(__file__).resolve().parents[1] / "crosslink" / "examples" / "links.yaml"
LINK = load_links(EXAMPLE).links[0]


def with_comments(**changes):
    return replace(LINK, comments=replace(LINK.comments, **changes))


def test_exclude_matches_the_plain_text():
    assert not should_mirror(LINK, "partner", "<p>#internal do not share</p>")
    assert not should_mirror(LINK, "client", "  #internal")
    assert should_mirror(LINK, "partner", "<p>Please review #internal notes</p>")
    assert should_mirror(LINK, "partner", "<p>Hello</p>") and should_mirror(LINK, "partner", "")


def test_matching_mode_needs_include_and_exclude_still_wins():
    link = with_comments(mode="matching", include=r"@client\b", exclude="secret")
    assert should_mirror(link, "partner", "<p>@client please look</p>")
    assert not should_mirror(link, "partner", "<p>for us only</p>")
    assert not should_mirror(link, "partner", "<p>@client secret</p>")
    assert not should_mirror(with_comments(mode="matching", include=None), "partner", "anything")
    # include is ignored in mode all
    assert should_mirror(with_comments(mode="all", include="never"), "partner", "text")


def test_render_mirror_names_the_author_side_and_time():
    html = render_mirror(LINK, "partner", "Olga <Boss> & Co", "01-02-2024 10:30", "<p>Hi</p>")
    assert html.startswith(MIRROR_MARK) and html.endswith("<p>Hi</p>")
    assert "<b>Olga &lt;Boss&gt; &amp; Co</b> (ACME Consulting), 01-02-2024 10:30" in html
    assert is_mirror(html) and not should_mirror(LINK, "client", html)
    assert "(Client Co)" in render_mirror(LINK, "client", "A", "t", "")


def test_render_withdrawn_keeps_the_original_once():
    mirror = render_mirror(LINK, "client", "Ann", "02-02-2024 09:00", "<p>Oops</p>")
    withdrawn = render_withdrawn(LINK, "client", mirror, "03-02-2024 11:00")
    assert "Withdrawn on the Client Co side at 03-02-2024 11:00." in withdrawn
    assert withdrawn.count(MIRROR_MARK) == 1 and withdrawn.endswith("<p>Oops</p>")
    assert withdrawn.index("Withdrawn") < withdrawn.index("Oops")
    assert render_withdrawn(LINK, "client", withdrawn, "later") == withdrawn
    assert is_mirror(withdrawn)


def test_plain_text():
    assert plain_text("<p>a &amp; <b>b</b></p>\n") == "a & b"
    assert not is_mirror(None) and not is_mirror("<p>x</p>")


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["partner", "client"]), st.text(max_size=20), st.text(max_size=12), st.text(max_size=40))
def test_a_mirror_is_never_mirrored_again(side, author, when, text):
    mirror = render_mirror(LINK, side, author, when, text)
    assert is_mirror(mirror)
    assert not should_mirror(LINK, "client" if side == "partner" else "partner", mirror)
    assert not should_mirror(LINK, side, render_withdrawn(LINK, side, mirror, when))
    assert text in mirror  # the original HTML is carried unchanged
