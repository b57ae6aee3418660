"""Session recording: asciicast files per channel, the SQLite index, verification, replay.

Modules:

* ``recorder``  the API the SSH layer calls (Recorder, SessionHandle, ChannelRecording)
* ``gate``      the agent's channel, written to only once the recording holds what came before
* ``supervisor`` the bounded queue, acknowledgements, faults and the worker's respawn
* ``replay``    what a failed worker did not acknowledge, as the next one gets it
* ``process``   one recording worker process and its pipes (bastion side)
* ``worker``    the recording worker process (``python -m bastion.recording.worker``)
* ``writer``    what the worker does: index rows, and recording files through ``sink``
* ``health``    disk headroom, the space reserve, the probe a new worker must pass
* ``status``    ``DATA_DIR/status.sock``: what ``bastion status`` shows
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
