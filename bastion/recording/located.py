"""Where a recording's bytes are: this node's file, or (on a shared store) the store's copy.

A channel row names its recording by a path relative to the data dir of the node that
recorded it.  On that node the file is there.  On another node sharing a PostgreSQL store
the file is not, and :func:`recording_file` writes the store's copy (bastion.store.chunks)
to ``DATA_DIR/recordings-cache/`` (or a private temp dir when the data dir is not writable)
and returns that path, so play, export and the API read it as any recording.  A cached copy
of a sealed recording is used again while its SHA-256 is the sealed one.

Not covered: following another node's open recording (bastion.recording.follow reads the
store's copy as it grows, without writing it to disk).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

CACHE_DIR = "recordings-cache"


def recording_file(data_dir: Path, channel: dict[str, Any]) -> Path:
    """The local path of ``channel``'s recording (see the module doc)."""
    from bastion.store import location
    path: Path = Path(data_dir) / str(channel["path"])
    if path.exists() or not location.current().postgres:
        return path
    from bastion.recording import schema
    from bastion.store import chunks
    conn = schema.connect(Path(data_dir), readonly=True)
    try:
        for base in (Path(data_dir) / CACHE_DIR, None):
            root = base if base is not None else Path(tempfile.mkdtemp(prefix="bastion-rec-"))
            try:
                got = chunks.materialize(conn, int(channel["id"]), root / str(channel["path"]),
                                         channel.get("sha256"))
            except OSError:
                continue
            return got or path
    finally:
        conn.close()
    return path
