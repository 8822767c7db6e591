"""One module per subsystem bootstrap converges and the doctor judges: docker, daemon.json,
data-root, firewalld, site settings."""
