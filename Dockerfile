# bastion serve in a container: data (with the vault in keys/) as a volume, port 2222.
#   docker build -t bastion .
#   docker run -d --name bastion -p 2222:2222 \
#       -v $PWD/policy.toml:/etc/bastion/policy.toml:ro -v bastion-data:/var/lib/bastion \
#       -v $PWD/vault-passphrase:/run/secrets/vault_passphrase:ro bastion
#   docker exec bastion bastion keys generate web1     # its public line: web1's authorized_keys
# or `docker compose up -d` with compose.yaml (the passphrase as a compose secret).
# The process runs as uid/gid 10001 (fixed, so that volumes keep their owner across
# rebuilds): a bind-mounted data dir must belong to 10001:10001 and be 0700.
# Base image pinned by digest (the multi-arch index of python:3.11-slim-bookworm, amd64 and
# arm64), so that a rebuild cannot change what runs under the same tag. To move it on:
# `docker buildx imagetools inspect python:3.11-slim-bookworm` and replace the digest.
FROM python:3.11-slim-bookworm@sha256:b18992999dbe963a45a8a4da40ac2b1975be1a776d939d098c647482bcad5cba

ARG BASTION_UID=10001
# (openssh-client unpinned: Debian's security updates should reach it at each rebuild)
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends openssh-client \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid "${BASTION_UID}" bastion \
    && useradd --system --uid "${BASTION_UID}" --gid "${BASTION_UID}" \
        --home-dir /var/lib/bastion --shell /usr/sbin/nologin bastion \
    && mkdir -p /var/lib/bastion/keys /etc/bastion \
    && chown -R bastion:bastion /var/lib/bastion && chmod -R 700 /var/lib/bastion

WORKDIR /opt/bastion
COPY pyproject.toml README.md ./
COPY bastion ./bastion
RUN pip install --no-cache-dir .

USER 10001:10001
ENV BASTION_POLICY=/etc/bastion/policy.toml \
    BASTION_DATA_DIR=/var/lib/bastion \
    BASTION_KEYS_DIR=/var/lib/bastion/keys \
    BASTION_LISTEN=0.0.0.0:2222 \
    BASTION_VAULT_PASSPHRASE_FILE=/run/secrets/vault_passphrase \
    BASTION_LOG_FORMAT=json
VOLUME ["/var/lib/bastion"]
EXPOSE 2222
# healthy while sessions are recorded (bastion status: 0 recording, 3 refusing, 4 not serving)
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
    CMD ["bastion", "status", "--json"]
ENTRYPOINT ["bastion"]
CMD ["serve"]
