#!/bin/sh
# Install fedshield into a Flower image, in two cacheable steps (dependencies, then our
# code). Flower itself comes with the base image (flwr==1.42.0), so the flwr requirement
# is left out; torch and torchvision are the pinned CPU builds.
#   install-app.sh deps   needs /app/pyproject.toml
#   install-app.sh app    needs the source tree in /app
set -eu
TORCH_INDEX="https://download.pytorch.org/whl/cpu"
case "${1:-}" in
  deps)
    python - <<'PY' > /tmp/requirements.txt
import tomllib
deps = tomllib.load(open("/app/pyproject.toml", "rb"))["project"]["dependencies"]
print("\n".join(d for d in deps if not d.startswith("flwr[") and not d.startswith("flwr=")))
PY
    python -m pip install --no-cache-dir --extra-index-url "$TORCH_INDEX" -r /tmp/requirements.txt
    rm /tmp/requirements.txt
    ;;
  app)
    # Build from a scratch copy: pip builds local projects in-tree, and /app stays as is.
    build_dir="$(mktemp -d)"
    cp -r /app/pyproject.toml /app/README.md /app/task /app/client /app/server \
      /app/privacy /app/simulations /app/fedshield "$build_dir"/
    python -m pip install --no-cache-dir --no-deps "$build_dir"
    rm -rf "$build_dir"
    ;;
  *)
    echo "usage: install-app.sh deps|app" >&2
    exit 2
    ;;
esac
