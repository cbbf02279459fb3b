"""links.yaml: loading, defaults, secrets by variable name, and lint with the right line numbers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.links import (
    ConfigError,
    CreateSettings,
    Scope,
    SecretMissing,
    SendControls,
    derive_account,
    find_link,
    lint_file,
    load_links,
    parse_links,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "crosslink" / "examples" / "links.yaml"
TEXT = EXAMPLE.read_text(encoding="utf-8")

MINIMAL = """\
links:
  - name: mini
    sides:
      partner:
        base_url: https://acme.planfix.com/rest
        token_env: P_TOKEN
        webhook_secret_env: P_SECRET
        integration_user: "user:1"
        scope: {project: 10}
      client:
        base_url: https://client.planfix.com/rest/
        token_env: C_TOKEN
        webhook_secret_env: C_SECRET
        integration_user: "user:5"
        scope: {participant: "user:9"}
    statuses:
      partner_to_client: {1: 2}
      client_to_partner: {2: 1}
"""


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based line of the OCCURRENCE-th line containing NEEDLE (fails the test if absent)."""
    hits = [number for number, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(hits) >= occurrence, f"{needle!r} not in the text"
    return hits[occurrence - 1]


def issues_of(text: str):
    with pytest.raises(ConfigError) as caught:
        parse_links(text, "test.yaml")
    return caught.value.issues


# --- loading ---------------------------------------------------------------------------------

def test_example_is_clean_and_loads():
    assert lint_file(EXAMPLE) == []
    link = find_link(load_links(EXAMPLE), "demo")
    assert list(link.sides) == ["partner", "client"]
    assert link.sides["client"].name == "client"
    assert link.sides["partner"].base_url == "http://127.0.0.1:8100/partner/rest"
    assert link.other("partner") == "client" and link.other("client") == "partner"
    assert link.statuses.partner_to_client[4] == 14
    assert link.statuses.transitions["client"][13] == (12,)
    assert link.statuses.client_to_partner[15] == 4
    assert link.fields.custom[1].direction == "partner_to_client" and link.fields.custom[1].transform is None
    assert link.people.counterpart("partner", "user:4") == "user:5"
    assert link.people.counterpart("client", "user:5") == "user:4"
    assert link.people.counterpart("partner", "user:2") is None


def test_defaults_for_everything_optional():
    link = parse_links(MINIMAL).links[0]
    partner, client = link.sides["partner"], link.sides["client"]
    assert partner.account == "acme.planfix.com" and client.account == "client.planfix.com"
    assert partner.webhook_auth == "header"
    assert partner.create == CreateSettings(project=10) and client.create == CreateSettings()
    assert client.scope.kind == "participant" and client.scope.value == "user:9"
    assert link.statuses.transitions == {} and link.statuses.rules == ()
    assert link.statuses.on_forbidden == "path"
    assert all(rule.direction == "both" and rule.owner is None for rule in link.fields.rules.values())
    assert link.fields.custom == ()
    assert link.people.pairs == () and link.people.representatives == {"partner": None, "client": None}
    assert link.comments.mode == "all" and link.comments.side_labels == {"partner": "Partner", "client": "Client"}
    assert "{author}" in link.comments.header
    for side in (partner, client):
        assert side.send == SendControls(paused=False, exclude_comments=None, exclude_tasks=())
        assert side.approvers == ()


def test_each_side_names_what_it_holds_back_and_who_approves_for_it():
    text = with_client(TEXT, 'send: {paused: true, exclude_comments: "^#client-only", '
                             'exclude_tasks: [{project: 21}, {tag: {field: 7, value: "internal"}}]}\n'
                             '        approvers: ["user:5", "user:7"]')
    client = parse_links(text).links[0].sides["client"]
    assert client.send == SendControls(True, "^#client-only", (Scope("project", 21), Scope("tag", "internal", 7)))
    assert client.approvers == ("user:5", "user:7")
    assert parse_links(text).links[0].sides["partner"].send == SendControls()


@pytest.mark.parametrize("url, account", [
    ("http://127.0.0.1:8100/partner/rest", "127.0.0.1:8100/partner"),
    ("https://acme.planfix.com/rest/", "acme.planfix.com"),
    ("https://acme.planfix.ru/rest", "acme.planfix.ru"),
])
def test_derive_account(url, account):
    assert derive_account(url) == account


def test_find_link_names_the_known_links():
    config = load_links(EXAMPLE)
    with pytest.raises(KeyError, match="demo"):
        find_link(config, "nope")
    with pytest.raises(ValueError):
        config.links[0].other("middle")


def test_secrets_are_read_late_and_errors_name_only_the_variable():
    side = load_links(EXAMPLE).links[0].sides["partner"]
    env = {"CROSSLINK_DEMO_PARTNER_TOKEN": "tok-very-secret", "CROSSLINK_DEMO_PARTNER_SECRET": "hook-secret"}
    assert side.token(env) == "tok-very-secret"
    assert side.webhook_secret(env) == "hook-secret"
    assert "tok-very-secret" not in repr(side)
    for reader in (side.token, side.webhook_secret):
        with pytest.raises(SecretMissing) as caught:
            reader({"CROSSLINK_DEMO_PARTNER_TOKEN": "", "OTHER": "tok-very-secret"})
        message = str(caught.value)
        assert "CROSSLINK_DEMO_PARTNER" in message and "tok-very-secret" not in message


def test_config_error_lists_every_issue_with_lines():
    text = TEXT.replace("token_env: CROSSLINK_DEMO_CLIENT_TOKEN", "token_env: lower_case") \
               .replace("mode: all", "mod: all")
    with pytest.raises(ConfigError) as caught:
        parse_links(text, "bad.yaml")
    message = str(caught.value)
    assert "bad.yaml" in message and len(caught.value.issues) == 2
    assert f"line {line_of(text, 'lower_case')}" in message and f"line {line_of(text, 'mod: all')}" in message


# --- lint: each listed problem, at its line --------------------------------------------------

def with_client(text: str, line: str) -> str:
    """TEXT with LINE added to the client side's keys."""
    anchor = "        assignee_note_field: 202"
    assert anchor in text
    return text.replace(anchor, f"{anchor}\n        {line}")


def dup_link(text: str) -> str:
    body = text.split("links:\n", 1)[1]
    return text + body


CASES = [
    # (id, mutation, needle whose line is expected, occurrence, words expected in the message/fix)
    ("unknown key", lambda t: t.replace("mode: all", "mod: all"), "mod: all", 1, "did you mean 'mode'"),
    ("unknown side key", lambda t: t.replace("webhook_auth: basic", "webhok_auth: basic"),
     "webhok_auth", 1, "did you mean 'webhook_auth'"),
    ("duplicate link name", dup_link, "- name: demo", 2, "duplicate link name"),
    ("target not mapped back", lambda t: t.replace("{1: 11, 2: 12, 3: 13, 4: 14}", "{1: 11, 2: 12, 3: 16, 4: 14}"),
     "partner_to_client:", 1, "never maps it back"),
    ("reverse target not mapped back", lambda t: t.replace("{11: 1, 12: 2, 13: 3, 14: 4, 15: 4}", "{11: 1, 12: 2, 13: 3, 14: 4, 15: 5}"),
     "client_to_partner:", 1, "never maps it back"),
    ("rule status unknown", lambda t: t.replace("then: {side: partner, status: 4}", "then: {side: partner, status: 9}"),
     "- {when: {side: client", 1, "partner status 9 is not in the status maps"),
    ("rule side unknown", lambda t: t.replace("when: {side: client", "when: {side: vendor"),
     "- {when: {side: vendor", 1, "Must be one of"),
    ("unreachable mapped status", lambda t: t.replace("12: [13, 14]", "12: [13]"),
     "client: {11: [12, 15]", 1, "status 14 is a sync target but can't be reached"),
    ("person paired twice", lambda t: t.replace('- {partner: "user:4", client: "user:5"}',
                                                '- {partner: "user:4", client: "user:5"}\n        - {partner: "user:4", client: "user:6"}'),
     '{partner: "user:4", client: "user:6"}', 1, "already paired"),
    ("representative malformed", lambda t: t.replace('partner: "user:5"  ', 'partner: "bob"  '),
     'partner: "bob"', 1, "role:<name>"),
    ("fallback malformed", lambda t: t.replace('fallback: {partner: "user:2"', 'fallback: {partner: "2"'),
     "fallback:", 1, "user:N"),
    ("role unknown", lambda t: t.replace('"role:partner_lead"', '"role:boss"'), "role:boss", 1, "unknown role 'boss'"),
    ("transform not reversible", lambda t: t.replace("direction: partner_to_client}",
                                                     "direction: both, transform: {map: {mail: email, phone: email}}}"),
     "transform:", 1, "not one-to-one"),
    ("regex does not compile", lambda t: t.replace('exclude: "^#internal"', 'exclude: "(["'), "exclude:", 1, "does not compile"),
    ("env var not UPPER_SNAKE", lambda t: t.replace("webhook_secret_env: CROSSLINK_DEMO_CLIENT_SECRET", "webhook_secret_env: demo-secret"),
     "demo-secret", 1, "UPPER_SNAKE"),
    ("same account on both sides", lambda t: t.replace("account: client", "account: partner"),
     "account: partner", 2, "both sides use account"),
    ("scope with two kinds", lambda t: t.replace("scope: {project: 20}", "scope: {project: 20, template: 3}"),
     "scope: {project: 20, template: 3}", 1, "exactly one"),
    ("duplicate yaml key", lambda t: t.replace("account: client\n", "account: client\n        account: other\n"),
     "account: other", 1, "appears twice"),
    ("bad link name", lambda t: t.replace("- name: demo", "- name: Demo_Link"), "Demo_Link", 1, "[a-z0-9-]+"),
    ("missing required key", lambda t: t.replace("        integration_user: \"user:1\"\n        scope: {project: 20}",
                                                 "        scope: {project: 20}"),
     "      client:", 1, "add 'integration_user'"),
    ("matching without include", lambda t: t.replace("mode: all", "mode: matching"), "      mode: matching", 1,
     "needs an include"),
    ("bad template", lambda t: t.replace("({side_label}), {time}", "({label}), {time}"), "header:", 1, "template is invalid"),
    ("mirrors created outside scope", lambda t: t.replace("create: {process: 3, project: 20", "create: {process: 3, project: 21"),
     "create: {process: 3, project: 21", 1, "outside the side's scope"),
    ("role without a counterpart", lambda t: t.replace('fallback: {partner: "user:2", client: "user:5"}',
                                                       'fallback: {partner: "user:2", client: "role:partner_lead"}'),
     "fallback:", 1, "without a client counterpart"),
    ("yaml syntax", lambda t: t.replace("on_forbidden: path", "on_forbidden: [path"), "on_forbidden", 1, "not valid YAML"),
    ("send regex does not compile", lambda t: with_client(t, 'send: {exclude_comments: "(["}'), "send:", 1,
     "does not compile"),
    ("send holds back the whole scope", lambda t: with_client(t, "send: {exclude_tasks: [{project: 20}]}"), "send:", 1,
     "holds back every task"),
    ("send key misspelt", lambda t: with_client(t, "send: {pause: true}"), "send:", 1, "did you mean 'paused'"),
    ("send task filter with two kinds", lambda t: with_client(t, "send: {exclude_tasks: [{project: 2, template: 3}]}"),
     "send:", 1, "exactly one"),
    ("approver is the integration user", lambda t: with_client(t, 'approvers: ["user:5", "user:1"]'), "approvers:", 1,
     "integration_user"),
    ("approver named twice", lambda t: with_client(t, 'approvers: ["user:5", "user:5"]'), "approvers:", 1,
     "named twice"),
    ("approver malformed", lambda t: with_client(t, 'approvers: ["Irina"]'), "approvers:", 1, "user:N"),
]


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_lint_finds_each_problem_at_its_line(case, tmp_path):
    _, mutate, needle, occurrence, words = case
    text = mutate(TEXT)
    assert text != TEXT, "the mutation must change the file"
    path = tmp_path / "links.yaml"
    path.write_text(text, encoding="utf-8")
    issues = lint_file(path)
    wanted_line = line_of(text, needle, occurrence)
    matching = [issue for issue in issues if words in f"{issue.message} {issue.fix}"]
    assert matching, f"no issue mentions {words!r}: {issues}"
    # YAML syntax errors are reported where the parser notices them: at or just after the line.
    slack = 2 if case[0] == "yaml syntax" else 0
    assert any(wanted_line <= issue.line <= wanted_line + slack for issue in matching), (wanted_line, matching)
    with pytest.raises(ConfigError):
        parse_links(text)


def test_lint_unreadable_file(tmp_path):
    issues = lint_file(tmp_path / "absent.yaml")
    assert len(issues) == 1 and issues[0].line is None and "can't read" in issues[0].message


def test_lint_rejects_non_mapping_and_empty_links():
    assert issues_of("- just a list\n")[0].message.startswith("the file must be a mapping")
    assert any("links" in issue.path for issue in issues_of("links: []\n"))


KEY_LINE = re.compile(r"^(\s+)(-\s+)?([a-z_]+):")
RENAMABLE = [number for number, line in enumerate(TEXT.splitlines()) if KEY_LINE.match(line)
             and "partner_lead:" not in line]


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(RENAMABLE), st.sampled_from(["x", "zz", "_old"]))
def test_any_misspelt_key_is_reported_on_its_own_line(line_index, suffix):
    lines = TEXT.splitlines()
    match = KEY_LINE.match(lines[line_index])
    start = match.start(3)
    lines[line_index] = lines[line_index][:start] + match.group(3) + suffix + lines[line_index][match.end(3):]
    issues = issues_of("\n".join(lines) + "\n")
    # A misspelt schema key is "unknown"; a misspelt side name under transitions is not a side.
    assert any(issue.line == line_index + 1 and ("unknown key" in issue.message or "Must be one of" in issue.message)
               for issue in issues), issues


# --- lint: schema and semantic problems in one pass ------------------------------------------

def test_schema_errors_do_not_hide_the_semantic_ones():
    """A file with both kinds reports both at once: the links the schema rejects are checked on
    the parts that parsed (an unknown key in statuses, a bad language, a malformed role), so the
    map that does not round-trip and the regex that does not compile show now, not on the next run."""
    text = (TEXT.replace("on_forbidden: path", "on_forbiden: path")
                .replace("language: en ", "language: xx ")
                .replace('partner_lead: {side: partner, user: "user:2"}',
                         'partner_lead: {side: partner, user: "user:2"}\n        bad: {side: nowhere, user: "user:3"}')
                .replace("{1: 11, 2: 12, 3: 13, 4: 14}", "{1: 11, 2: 12, 3: 13, 4: 99}")
                .replace('exclude: "^#internal"', 'exclude: "(unclosed"'))
    found = {(issue.line, words) for issue in issues_of(text)
             for words in ("on_forbidden", "Must be one of: en, ru", "Must be one of: partner, client",
                           "99 is a target", "does not compile")
             if words in f"{issue.message} {issue.fix}"}
    assert found == {(line_of(text, "on_forbiden"), "on_forbidden"),
                     (line_of(text, "language: xx"), "Must be one of: en, ru"),
                     (line_of(text, "bad: {side: nowhere"), "Must be one of: partner, client"),
                     (line_of(text, "partner_to_client:"), "99 is a target"),
                     (line_of(text, "exclude: \"(unclosed"), "does not compile")}


def test_a_check_is_not_run_on_a_part_the_schema_rejected():
    """partner status 4's entry holds a string: the schema says so, and the round-trip check,
    which would miss the entry and claim client_to_partner's 14 -> 4 is never mapped back, stays
    silent (it would report what the file never said)."""
    issues = issues_of(TEXT.replace("{1: 11, 2: 12, 3: 13, 4: 14}", "{1: 11, 2: 12, 3: 13, 4: delivered}"))
    assert [issue.path for issue in issues] == ["links[0].statuses.partner_to_client[4]"], issues


def test_a_link_missing_a_required_section_is_still_checked_elsewhere():
    """No statuses at all, and a bad token variable name: placeholders stand in for both, and
    the people and comments are checked as the file has them."""
    text = TEXT.replace("token_env: CROSSLINK_DEMO_CLIENT_TOKEN", "token_env: lower_case") \
               .replace('"role:partner_lead"', '"role:boss"').replace('exclude: "^#internal"', 'exclude: "(["')
    start, end = text.index("    statuses:\n"), text.index("    people:\n")
    text = text[:start] + text[end:]
    messages = [f"{issue.path}: {issue.message}" for issue in issues_of(text)]
    assert any("links[0].statuses: required key is missing" in m for m in messages), messages
    assert any("token_env" in m and "UPPER_SNAKE" in m for m in messages), messages
    assert any("unknown role 'boss'" in m for m in messages), messages
    assert any("comments.exclude: regex does not compile" in m for m in messages), messages
    # Nothing about the placeholders themselves (their statuses, their account, their variables).
    assert not any("status" in m and "statuses: required" not in m for m in messages), messages
    assert not any("LINT_PLACEHOLDER" in m or "invalid" in m for m in messages), messages
