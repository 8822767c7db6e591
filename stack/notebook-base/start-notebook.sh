#!/bin/bash
# Start JupyterLab; under JupyterHub (an API token in the environment) start the
# single-user server instead, as the Jupyter Docker Stacks image does.
set -e
if [ -n "${JUPYTERHUB_API_TOKEN}" ]; then
    exec /usr/local/bin/start-singleuser.sh "$@"
fi
exec /usr/local/bin/start.sh jupyter lab --ip=0.0.0.0 "$@"
