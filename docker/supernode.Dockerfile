# syntax=docker/dockerfile:1
# A hospital's or bank's client: Flower's SuperNode with fedshield's ClientApp and its
# dependencies (CPU torch, Opacus). The ClientApp runs in a subprocess of the SuperNode
# (--isolation subprocess), inside this one container. Data, node key, CA and ledger are
# mounted at run time (compose.yml); the image holds none of them.
FROM flwr/supernode:1.42.0-py3.11-ubuntu24.04

# Build and run as the base image's unprivileged user (app, uid 49999), never as root.
USER 49999:49999
WORKDIR /app
COPY --chown=49999:49999 docker/install-app.sh pyproject.toml /app/
RUN ./install-app.sh deps
# Everything .dockerignore lets through: our packages, README, pyproject.
COPY --chown=49999:49999 . /app/
RUN ./install-app.sh app

# Mount points: the client's own partition (read-only) and its privacy ledger.
USER 0
RUN install -d -o 49999 -g 49999 -m 0700 /ledger && install -d -o 49999 -g 49999 -m 0500 /data
USER 49999:49999
ENTRYPOINT ["flower-supernode"]
