"""The HTTPS API served by ``bastion serve --api-listen`` (docs/API.md).

* ``http``    HTTP/1.1 on asyncio streams, h11 as the protocol core
* ``tls``     the certificate: from files, or self-signed in DATA_DIR/api/
* ``routes``  who may call what (tokens validated like agents'; roles from policy.toml)
* ``server``  starting it beside the SSH listener
* ``client``  the remote CLI's side (``--server URL``)
"""
