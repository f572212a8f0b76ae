# syntax=docker/dockerfile:1
# The audit service: `fedshield audit serve`, the read-only API on the privacy ledgers
# and run reports. It needs no Flower runtime and no training; it reads run results from a
# read-only volume. Flower's base image: the same Python 3.11 and unprivileged
# user `app` as the other images, without a Flower service.
FROM flwr/base:1.42.0-py3.11-ubuntu24.04

# Build and run as the base image's unprivileged user (app, uid 49999), never as root.
USER 49999:49999
WORKDIR /app
COPY --chown=49999:49999 docker/install-app.sh pyproject.toml /app/
RUN ./install-app.sh deps
# Everything .dockerignore lets through: our packages, README, pyproject.
COPY --chown=49999:49999 . /app/
RUN ./install-app.sh app

# The token database's volume is created owned by the unprivileged user.
USER 0
RUN install -d -o 49999 -g 49999 -m 0700 /app/audit
USER 49999:49999
EXPOSE 8000
ENTRYPOINT ["fedshield"]
CMD ["audit", "serve", "--runs-dir", "/app/runs", "--token-db", "/app/audit/tokens.db", "--host", "0.0.0.0", "--port", "8000"]
