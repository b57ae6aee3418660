"""File transfers decided by path (pure): which rule says what about an sftp operation.

``decide`` maps an operation's effect (``reads`` / ``writes``) on resolved paths to a
:class:`Verdict`; ``legacy_scp`` recognises the exec form of scp (``scp -t`` / ``scp -f``);
``digest`` hashes a file transferred in pieces.
The IO side (the SFTP relay) is :mod:`bastion.ssh.sftp`.  Pure: no IO.
"""
