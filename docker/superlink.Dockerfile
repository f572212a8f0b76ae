# syntax=docker/dockerfile:1
# The coordinator's SuperLink: Flower's own image, pinned. It only relays messages and keeps
# the federation's state; it never runs fedshield code (the ServerApp runs in the
# serverapp image). Its TLS key, certificate and the CA come in as compose secrets at run
# time; nothing secret is in the image.
FROM flwr/superlink:1.42.0-py3.13-ubuntu24.04

# The state volume (--database /app/state/superlink.db) is created owned by the
# unprivileged user `app` (uid 49999) of the base image, so a fresh named volume is
# writable by it and by nobody else.
USER 0
RUN install -d -o 49999 -g 49999 -m 0700 /app/state
USER 49999:49999
WORKDIR /app

# One port for the Fleet, Control and Runtime APIs (HTTPS).
EXPOSE 8000
ENTRYPOINT ["flower-superlink"]
