"""The ``bastion`` command line: one module per command group.

Each module exposes ``register(app)``; :mod:`bastion.cli.main` builds the app.
Commands are thin: one library call, then rich rendering.  Only this package
turns :class:`bastion.errors.BastionError` into messages and exit codes.
"""
