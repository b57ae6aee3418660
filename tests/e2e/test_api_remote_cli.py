"""The reviewer CLI with --server for `commands search`, `sessions export` and `verify`:
only the API, no data dir; the server decides who may (a non-reviewer is refused), and a
recording changed on the bastion's disk makes `verify --server` fail as it does locally."""

from __future__ import annotations

import json

import pytest

from tests.e2e.test_api import API_RULES, ApiRig


@pytest.fixture(scope="module")
def api(tmp_path_factory, issuer):
    r = ApiRig(tmp_path_factory.mktemp("apicli"), issuer).setup()
    r.write_policy(r.policy_text(API_RULES))
    yield r.start_api()
    r.close()


@pytest.fixture(scope="module")
def auditor(issuer):
    client = issuer.clients.by_name("api-auditor") or \
        issuer.add_client("api-auditor", roles=["auditors"])
    return issuer.mint(client=client)


@pytest.fixture(scope="module")
def lead(issuer):
    client = issuer.clients.by_name("api-sre-lead") or \
        issuer.add_client("api-sre-lead", roles=["sre-leads"])
    return issuer.mint(client=client)


@pytest.fixture(scope="module")
def session_id(api, token):
    assert api.ssh(token, "echo remote-$((20+3)); echo to-stderr >&2").out == "remote-23\n"
    rows = json.loads(api.cli("sessions", "list", "--json").out)
    return rows[0]["id"]


def remote_cli(api, who: str, *args: str, check: bool = True):
    """The CLI with --server only: its data dir and policy do not exist."""
    env = {"BASTION_TOKEN": who, "BASTION_DATA_DIR": str(api.root / "nowhere"),
           "BASTION_POLICY": str(api.root / "nowhere.toml")}
    return api.cli(*args, "--server", api.url, "--server-ca", str(api.cert), env=env,
                   check=check)


def test_commands_search_remotely(api, auditor, lead, session_id):
    rows = json.loads(remote_cli(api, auditor, "commands", "search", "remote", "--json").out)
    assert [(r["line"], r["session_id"]) for r in rows] == \
        [("echo remote-$((20+3)); echo to-stderr >&2", session_id)]
    table = remote_cli(api, auditor, "commands", "search", "remote").out
    assert "remote-$((20+3))" in table
    refused = remote_cli(api, lead, "commands", "search", "remote", check=False)
    assert refused.returncode != 0 and "not in [settings] reviewers" in refused.err


@pytest.mark.parametrize("fmt", ["cast", "json", "raw"])
def test_sessions_export_remotely_matches_the_local_export(api, auditor, session_id, fmt,
                                                           tmp_path):
    there = tmp_path / f"remote.{fmt}"
    here = tmp_path / f"local.{fmt}"
    remote_cli(api, auditor, "sessions", "export", str(session_id), "--format", fmt,
               "-o", str(there))
    api.cli("sessions", "export", str(session_id), "--format", fmt, "-o", str(here))
    assert there.read_bytes() == here.read_bytes()
    assert b"remote-23" in there.read_bytes()


def test_verify_remotely_reports_operations_kept_aside_on_the_server(api, auditor, session_id):
    # a file as the server's recording worker writes it (bastion.recording.quarantine.keep)
    from bastion.recording import quarantine
    from bastion.recording.ops import OP_COMMAND
    kept = quarantine.keep(api.data_dir, (OP_COMMAND, 7, session_id, 3, 0.0, 0.0,
                                          "echo \x1b[2Jx", None, "allow", "r", "why", None,
                                          "m"), "DataError: refused")
    try:
        report = remote_cli(api, auditor, "verify", "--json", check=False)
        assert report.returncode == 4, report.err
        doc = json.loads(report.out)
        assert doc["ok"] is True and [k["path"] for k in doc["kept_aside"]] == [str(kept)]
        said = remote_cli(api, auditor, "verify", check=False)
        assert said.returncode == 4
        assert "1 recording operation(s) kept aside" in said.err and kept.name in said.err
        assert f"session {session_id} channel 3 command" in said.err
    finally:
        api.cli("quarantine", "ack", "--all")       # on the server's data dir
    assert remote_cli(api, auditor, "verify").returncode == 0


def test_verify_remotely_and_a_changed_recording_fails_it(api, auditor, lead, session_id):
    report = json.loads(remote_cli(api, auditor, "verify", "--json").out)
    assert report["ok"] is True and report["files_checked"] >= 1
    said = remote_cli(api, auditor, "verify")
    assert said.returncode == 0 and "ok:" in said.out and "chain head: seq" in said.out
    refused = remote_cli(api, lead, "verify", check=False)
    assert refused.returncode != 0 and "may not verify" in refused.err
    show = json.loads(api.cli("sessions", "show", str(session_id), "--json").out)
    path = api.data_dir / show["channels"][0]["path"]
    path.write_bytes(path.read_bytes().replace(b"remote-23", b"remote-99"))
    failed = remote_cli(api, auditor, "verify", check=False)
    assert failed.returncode == 3, failed.err
    assert "verification FAILED" in failed.err and show["channels"][0]["path"] in failed.err
    # an export of the changed recording warns, as it does locally: the fetched copy's hash
    # is checked against the index's
    exported = remote_cli(api, auditor, "sessions", "export", str(session_id), "--format", "cast")
    assert "does not match the SHA-256 sealed at close" in exported.err
