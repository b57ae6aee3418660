"""A rotated store password is taken from the password file by the next connection, reader
or writer, without a restart (bastion.store.pgconn); the old one is refused by then."""

from __future__ import annotations

import pytest

from bastion.recording import Recorder, query
from bastion.store import location, pgconn
from bastion.store.errors import StoreOperationalError
from tests.integration.recordkit import record_session

pytestmark = pytest.mark.integration


def test_a_rotated_password_needs_no_restart(tmp_path, pg_cluster, monkeypatch):
    role, db = "rotating", "rotation"          # its own role: the shared one stays as it is
    pg_cluster.psql(f"CREATE ROLE {role} LOGIN PASSWORD 'first-password-1'")
    pg_cluster.psql(f'CREATE DATABASE "{db}" OWNER {role}')
    secret = tmp_path / "pg-password"
    secret.write_text("first-password-1\n")
    secret.chmod(0o600)
    url = f"postgresql://{role}@127.0.0.1:{pg_cluster.port}/{db}"
    monkeypatch.setenv("BASTION_STORE_URL", url)
    monkeypatch.setenv("BASTION_STORE_PASSWORD_FILE", str(secret))
    monkeypatch.setenv("BASTION_NODE", "rot")
    rec = Recorder.open(tmp_path)
    record_session(rec, "web1", ["echo before"])
    settings = location.check(url, str(secret), "rot", "test")
    held = pgconn.connect(settings, readonly=True)      # the pool's connection, kept busy

    pg_cluster.psql(f"ALTER ROLE {role} PASSWORD 'second-password-2'")
    secret.write_text("second-password-2\n")
    reader = pgconn.connect(settings, readonly=True)    # a new pool connection: the new one
    assert reader.execute("SELECT 1").fetchone()[0] == 1
    writer = pgconn.PgConnection(settings)
    assert writer.execute("SELECT 1").fetchone()[0] == 1
    record_session(rec, "web1", ["echo after"])          # recording goes on throughout
    rec.close()
    assert {h["line"] for h in query.search_commands(query.open_index(tmp_path), "echo")} == \
        {"echo before", "echo after"}

    secret.write_text("first-password-1\n")              # the old password: refused
    with pytest.raises(StoreOperationalError, match="cannot be reached"):
        pgconn.PgConnection(settings)
    for conn in (held, reader, writer):
        conn.close()
