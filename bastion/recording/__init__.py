"""Session recording: asciicast files per channel, the SQLite index, verification, replay.

Modules:

* ``recorder``  the API the SSH layer calls (Recorder, SessionHandle, ChannelRecording)
* ``process``   the bounded queue to the recording worker process (bastion side)
* ``worker``    the recording worker process (``python -m bastion.recording.worker``)
* ``writer``    what the worker does: recording files and index rows
* ``recover``   marking sessions interrupted after a crash
* ``schema``    the index schema and migrations
* ``chain``     tamper-evidence hash chain
* ``query``     reading the index for the CLI (list, show, search)
* ``verify``    ``bastion verify`` and ``bastion prune``
* ``player``    replay and export

See docs/RECORDINGS.md for the on-disk formats and the reviewer workflow.
"""

from bastion.recording.recorder import ChannelRecording, Recorder, SessionHandle

__all__ = ["Recorder", "SessionHandle", "ChannelRecording"]
