"""hostkit: bootstrap and diagnose a JupyterHub server."""

__version__ = "0.1.0"
