# syntax=docker/dockerfile:1
# The coordinator's app runner: Flower's SuperExec, which starts fedshield's ServerApp
# (flwr-serverapp) for each run the SuperLink schedules and talks to the SuperLink's
# Runtime API over TLS. Holds fedshield and its dependencies; run results go to /app/runs.
FROM flwr/superexec:1.42.0-py3.11-ubuntu24.04

# Build and run as the base image's unprivileged user (app, uid 49999), never as root.
USER 49999:49999
WORKDIR /app
COPY --chown=49999:49999 docker/install-app.sh pyproject.toml /app/
RUN ./install-app.sh deps
# Everything .dockerignore lets through: our packages, README, pyproject.
COPY --chown=49999:49999 . /app/
RUN ./install-app.sh app

USER 0
RUN install -d -o 49999 -g 49999 -m 0750 /app/runs
USER 49999:49999
ENTRYPOINT ["flower-superexec"]
