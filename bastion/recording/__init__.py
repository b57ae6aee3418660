"""Session recording: asciicast files per channel, the SQLite index, verification, replay.

Modules:

* ``recorder``  the API the SSH layer calls (Recorder, SessionHandle, ChannelRecording)
* ``writer``    the writer thread and its bounded queue
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
