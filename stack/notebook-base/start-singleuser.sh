#!/bin/bash
# Start the JupyterHub single-user server with JupyterLab as the default UI.
set -e
exec /usr/local/bin/start.sh jupyterhub-singleuser "$@"
