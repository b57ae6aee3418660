"""A PostgreSQL database whose encoding is not UTF8 is refused before anything is written:
in a LATIN1 database a command line with a CJK character failed the recording worker's
batch (and every replay of it), so one agent stopped recording for the whole node."""

from __future__ import annotations

import pytest

from bastion.errors import RecordingError
from bastion.recording import Recorder

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("encoding", ["LATIN1", "SQL_ASCII"])
def test_a_database_not_in_utf8_is_refused_with_the_fix(tmp_path, pg_cluster, monkeypatch,
                                                        encoding):
    name = f"enc_{encoding.lower()}"
    pg_cluster.psql(f"CREATE DATABASE {name} OWNER bastion ENCODING '{encoding}' "
                    "LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
    for key, value in pg_cluster.store_env(name, node="enc").items():
        monkeypatch.setenv(key, value)
    with pytest.raises(RecordingError) as refused:
        Recorder.open(tmp_path)
    assert f"encoding {encoding}" in str(refused.value)
    assert "ENCODING 'UTF8'" in str(refused.value)
    tables = pg_cluster.psql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", db=name)
    assert tables == "0"                                  # nothing was created
