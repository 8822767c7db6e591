#!/bin/bash
# Run the given command as jovyan (the image already runs as jovyan; root drops to it).
set -e
if [ "$(id -u)" = "0" ]; then
    exec sudo --preserve-env --set-home -u "${NB_USER:-jovyan}" PATH="${PATH}" "$@"
fi
exec "$@"
