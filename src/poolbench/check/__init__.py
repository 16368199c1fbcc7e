"""Checking the numbers: the server's own counts, and pgbench on the same server."""
