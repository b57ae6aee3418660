"""CLI: ``bastion keys generate|import|list`` — the vault of upstream keys.

Thin wrappers over :class:`bastion.vault.Vault`.  Does not cover the bastion's
own host keys (``bastion ca``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from bastion.cli.common import (
    DEFAULT_KEYS_DIR, JsonOpt, KeysDirOpt, err_console, escape, handle_errors, out_console,
)
from bastion.errors import VaultError
from bastion.secret import Secret

keys_app = typer.Typer(
    name="keys", no_args_is_help=True,
    help="The vault: private keys the bastion uses to log in to targets, encrypted at rest "
         "with BASTION_VAULT_PASSPHRASE (or the file named by BASTION_VAULT_PASSPHRASE_FILE)."
         "\n\nExample: bastion keys generate web1")


def _vault(keys_dir: Path):
    from bastion.vault import Vault
    return Vault.from_env(keys_dir)


@handle_errors
def generate_cmd(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Key name (letters, digits, . _ -), used as "
                                             "`key = NAME` in policy.toml.")],
    algorithm: Annotated[str, typer.Option("--algorithm", "-t",
                                           help="ed25519, rsa (3072 bits) or ecdsa (P-256).")]
    = "ed25519",
    force: Annotated[bool, typer.Option("--force", help="Replace an existing key of that name.")]
    = False,
    keys_dir: KeysDirOpt = Path(DEFAULT_KEYS_DIR),
) -> None:
    """Generate a key in the vault and print its public line for authorized_keys.

    Only the public line goes to stdout, so it can be appended to the target's
    ~USER/.ssh/authorized_keys directly.

    Example:

    \b
        bastion keys generate web1 >> /home/deploy/.ssh/authorized_keys
    """
    vault = _vault(keys_dir)
    line = vault.generate(name, algorithm, force=force)
    print(line)
    err_console.print(f"saved {escape(str(vault.key_path(name)))} (encrypted); put the line "
                      "above in the target user's ~/.ssh/authorized_keys")


@handle_errors
def import_cmd(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Key name in the vault.")],
    file: Annotated[Path, typer.Argument(metavar="FILE", help="Private key file (OpenSSH or PEM).",
                                         exists=False)],
    source_passphrase_file: Annotated[Optional[Path], typer.Option(
        "--source-passphrase-file", help="File holding the passphrase of FILE, if it is "
                                         "encrypted.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing key of that name.")]
    = False,
    keys_dir: KeysDirOpt = Path(DEFAULT_KEYS_DIR),
) -> None:
    """Encrypt an existing private key into the vault; prints its public line.

    FILE itself is left untouched: delete it yourself once the import is checked.

    Example:

    \b
        bastion keys import web1 ~/.ssh/id_ed25519_web1 \\
            --source-passphrase-file pw.txt
    """
    source = None
    if source_passphrase_file is not None:
        try:
            source = Secret(source_passphrase_file.read_text(encoding="utf-8").rstrip("\r\n"))
        except OSError as exc:
            raise VaultError(f"cannot read {source_passphrase_file}: {exc.strerror}") from exc
    vault = _vault(keys_dir)
    line = vault.import_key(name, file, source, force=force)
    print(line)
    err_console.print(f"imported {escape(str(file))} as {escape(name)} into "
                      f"{escape(str(vault.key_path(name)))} (encrypted)")


@handle_errors
def list_cmd(
    keys_dir: KeysDirOpt = Path(DEFAULT_KEYS_DIR),
    as_json: JsonOpt = False,
) -> None:
    """List the vault's keys: name, algorithm, fingerprint, public line. Needs no passphrase.

    Example:

    \b
        bastion keys list --json
    """
    from bastion.vault import Vault

    infos = Vault(keys_dir, None).list()
    if as_json:
        print(json.dumps([i.as_dict() for i in infos], indent=2))
        return
    if not infos:
        err_console.print(f"no keys in {escape(str(keys_dir))}; create one with: "
                          "bastion keys generate NAME")
        return
    table = Table("name", "algorithm")
    table.add_column("fingerprint", no_wrap=True)
    table.add_column("public key (for authorized_keys)", overflow="fold")
    from bastion.proto.sanitize import sanitize   # headers are unauthenticated until loaded

    for i in infos:
        table.add_row(*(escape(sanitize(v)) for v in (i.name, i.algorithm, i.fingerprint,
                                                        i.public_line)))
    out_console.print(table)


keys_app.command("generate")(generate_cmd)
keys_app.command("import")(import_cmd)
keys_app.command("list")(list_cmd)


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
