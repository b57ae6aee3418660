# bastion serve in a container: data and keys as volumes, port 2222.
#   docker build -t bastion .
#   docker run -p 2222:2222 -v $PWD/policy.toml:/etc/bastion/policy.toml:ro \
#       -v bastion-data:/var/lib/bastion -v $PWD/keys:/var/lib/bastion-keys \
#       -e BASTION_VAULT_PASSPHRASE_FILE=/run/secrets/vault bastion
FROM python:3.11-slim

RUN apt-get update && apt-get install -y --no-install-recommends openssh-client \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/bastion --shell /usr/sbin/nologin bastion \
    && mkdir -p /var/lib/bastion /var/lib/bastion-keys /etc/bastion \
    && chown bastion:bastion /var/lib/bastion /var/lib/bastion-keys && chmod 700 /var/lib/bastion /var/lib/bastion-keys

WORKDIR /opt/bastion
COPY pyproject.toml README.md ./
COPY bastion ./bastion
RUN pip install --no-cache-dir .

USER bastion
ENV BASTION_POLICY=/etc/bastion/policy.toml \
    BASTION_DATA_DIR=/var/lib/bastion \
    BASTION_KEYS_DIR=/var/lib/bastion-keys \
    BASTION_LISTEN=0.0.0.0:2222
VOLUME ["/var/lib/bastion", "/var/lib/bastion-keys"]
EXPOSE 2222
ENTRYPOINT ["bastion"]
CMD ["serve"]
