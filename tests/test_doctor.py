"""`crosslink doctor` against the Planfix emulator over HTTP, the real private Redis and the
producer served on loopback: a healthy link passes, and each way a link is commonly set up wrong
is named with its config path, its fix, and no secret.

The accounts are tests/conftest.py's EMULATOR_SEED; the link below names only what exists there,
and each test breaks one thing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from crosslink.base.settings import get_settings
from crosslink.cli import main
from crosslink.journal.store import Journal, journal_url
from crosslink.journal.versions import MappingVersions
from crosslink.lab.embedded_redis import EmbeddedRedis, free_port
from crosslink.lab.services import ProducerServer
from crosslink.operations.doctor import FAIL, OK, SKIP, Finding, run_doctor
from producers.receiver import create_app
from schemas.links import LinksConfig, parse_links

LINK_YAML = """\
links:
  - name: doc
    sides:
      partner: {{base_url: "{partner_url}", token_env: DOC_P_TOKEN, webhook_secret_env: DOC_P_SECRET,
                webhook_auth: header, integration_user: "user:1", scope: {{project: 10}},
                create: {{process: 1, initial_status: 1}}}}
      client: {{base_url: "{client_url}", token_env: DOC_C_TOKEN, webhook_secret_env: DOC_C_SECRET,
               webhook_auth: basic, integration_user: "user:1", scope: {{project: 20}},
               create: {{process: 3, initial_status: 11}}}}
    statuses:
      partner_to_client: {{1: 11, 2: 12, 4: 13}}
      client_to_partner: {{11: 1, 12: 2, 13: 4}}
    people:
      pairs:
        - {{partner: "user:3", client: "user:5"}}
      fallback: {{partner: "user:2", client: "user:5"}}
    fields:
      custom:
        - {{partner: 100, client: 200}}
"""
# Recognisable values: any of them in the doctor's output is a leak.
ENV = {"DOC_P_TOKEN": "tok-partner-sync", "DOC_C_TOKEN": "tok-client-sync",
       "DOC_P_SECRET": "doc-partner-s3cret-5b1e", "DOC_C_SECRET": "doc-client-s3cret-c09a"}
# No limiter waits in these tests: the emulator accounts have no limits either.
FAST_RATE_PER_S = 1000.0


def links_text(emulator_server, **replace: str) -> str:
    text = LINK_YAML.format(partner_url=emulator_server.base_url("partner"),
                            client_url=emulator_server.base_url("client"))
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


def load(emulator_server, **replace: str) -> LinksConfig:
    return parse_links(links_text(emulator_server, **replace), "doctor-links.yaml")


@pytest.fixture
def producer(emulator_server, redis_url) -> Iterator[ProducerServer]:
    """The producer for the healthy link, holding the right secrets, on the test Redis."""
    server = ProducerServer(create_app(load(emulator_server), redis_url, ENV)).start()
    try:
        yield server
    finally:
        server.stop()


def diagnose(config: LinksConfig, redis_url: str, producer_url: str, **env: str) -> list[Finding]:
    return run_doctor(config.links[0], "links[0]", redis_url, producer_url, {**ENV, **env}, FAST_RATE_PER_S)


def failures(findings: list[Finding]) -> dict[str, Finding]:
    return {finding.check: finding for finding in findings if finding.level == FAIL}


def assert_no_secret(findings: list[Finding], *extra: str) -> None:
    text = "\n".join(finding.line() for finding in findings)
    for secret in (*ENV.values(), *extra):
        assert secret not in text


def test_a_healthy_link_passes_every_check(emulator_server, producer, redis_url):
    findings = diagnose(load(emulator_server), redis_url, producer.url)
    assert failures(findings) == {}
    passed = {finding.check for finding in findings if finding.level == OK}
    for side in ("partner", "client"):
        assert {f"{side} token", f"{side} scope task_readonly", f"{side} scope comment_readonly",
                f"{side} scope user_readonly", f"{side} scope file_readonly", f"{side} statuses",
                f"{side} users", f"{side} custom fields", f"{side} webhook"} <= passed
    assert {"redis"} <= passed
    notes = [finding for finding in findings if finding.check.endswith("write scopes")]
    assert len(notes) == 2 and all("not probed" in note.message and "task_add" in note.message for note in notes)
    assert_no_secret(findings)


def test_a_wrong_token_names_the_side_and_its_variable_never_the_token(emulator_server, producer, redis_url):
    findings = diagnose(load(emulator_server), redis_url, producer.url, DOC_P_TOKEN="forged-token-4f1d")
    token = failures(findings)["partner token"]
    assert "DOC_P_TOKEN" in token.message and "401" in token.message and "DOC_P_TOKEN" in token.fix
    assert any(finding.level == SKIP and finding.check.startswith("partner ") for finding in findings)
    assert "client token" not in failures(findings)
    assert_no_secret(findings, "forged-token-4f1d")


def test_a_revoked_token_fails_the_same_way(emulator_world, emulator_server, producer, redis_url):
    emulator_world.revoke_token("client", "tok-client-sync")
    findings = diagnose(load(emulator_server), redis_url, producer.url)
    assert list(failures(findings)) == ["client token"]
    assert "DOC_C_TOKEN" in failures(findings)["client token"].message
    assert_no_secret(findings)


def test_an_unset_token_variable_is_named(emulator_server, producer, redis_url):
    findings = diagnose(load(emulator_server), redis_url, producer.url, DOC_C_TOKEN="")
    assert "DOC_C_TOKEN" in failures(findings)["client token"].message


def test_a_missing_scope_is_named_with_the_fix(emulator_server, producer, redis_url):
    """The read-only token has task_readonly and comment_readonly only."""
    findings = diagnose(load(emulator_server), redis_url, producer.url, DOC_P_TOKEN="tok-partner-readonly")
    failed = failures(findings)
    assert set(failed) == {"partner scope user_readonly", "partner scope file_readonly"}
    users = failed["partner scope user_readonly"]
    assert "405 code 5" in users.message and "DOC_P_TOKEN lacks scope user_readonly" in users.message
    assert "add scope user_readonly" in users.fix
    skipped = {finding.check: finding.message for finding in findings if finding.level == SKIP}
    assert skipped == {"partner users": "needs scope user_readonly"}
    assert_no_secret(findings, "tok-partner-readonly")


# One id of the link absent from its side: (what to change in the link, the failing check, what
# its message must name, what its fix must offer).
ABSENT_IDS = {
    "status, named twice": (
        {"{1: 11, 2: 12, 4: 13}": "{1: 11, 2: 12, 4: 19}", "{11: 1, 12: 2, 13: 4}": "{11: 1, 12: 2, 19: 4, 13: 4}"},
        "client status 19",
        ["links[0].statuses.partner_to_client[4]", "links[0].statuses.client_to_partner[19]", "process 3"],
        ["11 Submitted"]),
    "status, without a create process": (
        {"create: {process: 3, initial_status: 11}": "create: {initial_status: 19}"},
        "client status 19",
        ["links[0].sides.client.create.initial_status", "any task process of the account"],
        ["13 Done"]),
    "create process": (
        {"create: {process: 1, initial_status: 1}": "create: {process: 9}"},
        "partner process 9", ["links[0].sides.partner.create.process"], ["1 Partner delivery"]),
    "custom field": (
        {"{partner: 100, client: 200}": "{partner: 100, client: 299}"},
        "client custom field 299", ["links[0].fields.custom[0].client"], ["200 Cost"]),
}


@pytest.mark.parametrize("change, check, in_message, in_fix", ABSENT_IDS.values(), ids=ABSENT_IDS)
def test_an_id_absent_from_its_side_is_named_with_its_config_path_and_fix(emulator_server, producer, redis_url,
                                                                          change, check, in_message, in_fix):
    failed = failures(diagnose(load(emulator_server, **change), redis_url, producer.url))
    assert list(failed) == [check]
    assert all(text in failed[check].message for text in in_message), failed[check]
    assert all(text in failed[check].fix for text in in_fix), failed[check]


def test_a_user_absent_or_inactive_on_its_side_is_named(emulator_world, emulator_server, producer, redis_url):
    emulator_world.deactivate_user("partner", 3)
    config = load(emulator_server, **{'fallback: {partner: "user:2", client: "user:5"}':
                                      'fallback: {partner: "user:2", client: "user:9"}'})
    failed = failures(diagnose(config, redis_url, producer.url))
    assert set(failed) == {"client user user:9", "partner user user:3"}
    assert "no such employee" in failed["client user user:9"].message
    assert "links[0].people.fallback.client" in failed["client user user:9"].message
    assert "Olga Dev is inactive" in failed["partner user user:3"].message
    assert "links[0].people.pairs[0].partner" in failed["partner user user:3"].message
    assert "reactivate" in failed["partner user user:3"].fix


def test_a_producer_that_is_down_is_named(emulator_server, redis_url):
    nobody = f"http://127.0.0.1:{free_port()}"
    failed = failures(diagnose(load(emulator_server), redis_url, nobody))
    assert set(failed) == {"partner webhook", "client webhook"}
    assert "unreachable" in failed["partner webhook"].message and "--producer-url" in failed["partner webhook"].fix


def test_a_wrong_webhook_secret_is_named_by_its_variable(emulator_server, producer, redis_url):
    findings = diagnose(load(emulator_server), redis_url, producer.url, DOC_C_SECRET="not-the-producers-secret")
    failed = failures(findings)
    assert list(failed) == ["client webhook"]
    assert "DOC_C_SECRET" in failed["client webhook"].message and "401" in failed["client webhook"].message
    assert_no_secret(findings, "not-the-producers-secret")


def test_a_webhook_the_producer_takes_into_another_redis_did_not_arrive(emulator_server, redis_url):
    other = EmbeddedRedis().start()
    try:
        elsewhere = ProducerServer(create_app(load(emulator_server), other.url, ENV)).start()
        try:
            failed = failures(diagnose(load(emulator_server), redis_url, elsewhere.url))
        finally:
            elsewhere.stop()
    finally:
        other.cleanup()
    assert set(failed) == {"partner webhook", "client webhook"}
    assert "did not arrive" in failed["partner webhook"].message and "REDIS_URL" in failed["partner webhook"].fix


def test_without_redis_it_says_so_and_checks_nothing_else(emulator_server):
    findings = diagnose(load(emulator_server), "redis://:hunter2-pass@127.0.0.1:1/0", "http://127.0.0.1:1")
    assert [(finding.level, finding.check) for finding in findings] == [(FAIL, "redis"), (SKIP, "accounts, webhooks")]
    assert_no_secret(findings, "hunter2-pass")


@pytest.fixture
def cli_env(monkeypatch, emulator_server, redis_url, tmp_path) -> Iterator[str]:
    path = tmp_path / "links.yaml"
    path.write_text(links_text(emulator_server), encoding="utf-8")
    for name, value in {**ENV, "REDIS_URL": redis_url, "CROSSLINK_RATE_PER_S": str(FAST_RATE_PER_S)}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        yield str(path)
    finally:
        get_settings.cache_clear()


def test_the_command_prints_a_line_per_check_and_exits_by_the_verdict(cli_env, producer, monkeypatch):
    result = CliRunner().invoke(main, ["doctor", "--link", "doc", "--config", cli_env,
                                       "--producer-url", producer.url])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()  # the producer's log lines go to stderr
    assert lines[0].startswith("ok   redis: ") and lines[-1] == "doc: every check passed"
    assert all(line.split(" ", 1)[0] in ("ok", "note") for line in lines[:-1])

    monkeypatch.setenv("DOC_P_SECRET", "wrong-secret-for-cli")
    result = CliRunner().invoke(main, ["doctor", "--link", "doc", "--config", cli_env,
                                       "--producer-url", producer.url])
    assert result.exit_code == 1
    assert any(line.startswith("FAIL partner webhook: ") and "(fix: " in line for line in result.stdout.splitlines())
    assert result.stdout.splitlines()[-1] == "doc: 1 check(s) failed"
    assert "wrong-secret-for-cli" not in result.output


def test_rules_nobody_approved_are_a_warning_that_does_not_fail_the_verdict(cli_env, producer, emulator_server):
    link = load(emulator_server).links[0]
    approved = dataclasses.replace(link, sides={side: dataclasses.replace(conf, approvers=("user:3",))
                                                for side, conf in link.sides.items()})
    journal = Journal(journal_url(get_settings(), cli_env))   # beside the links file: no CROSSLINK_JOURNAL_URL
    MappingVersions(journal).ensure_first(approved)            # the file has since dropped the approvers
    journal.close()
    result = CliRunner().invoke(main, ["doctor", "--link", "doc", "--config", cli_env,
                                       "--producer-url", producer.url])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[-2].startswith("warn rules: links.yaml changes the rules in force (v1): not approved yet (fix: "
                                "propose it with: crosslink mapping propose --link doc ")
    assert lines[-1] == "doc: every check passed, 1 warning(s)"


def test_an_unknown_link_is_an_error(cli_env):
    result = CliRunner().invoke(main, ["doctor", "--link", "nope", "--config", cli_env])
    assert result.exit_code != 0 and "no link named 'nope'" in result.output


def test_a_missing_links_file_is_an_error_not_a_traceback(cli_env):
    result = CliRunner().invoke(main, ["doctor", "--link", "doc", "--config", cli_env + ".missing"])
    assert result.exit_code == 1 and "No such file" in result.output and result.exception.__class__ is SystemExit
