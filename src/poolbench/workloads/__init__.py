"""Workloads: what one operation does on a connection (the CRUD phases, the mix, scripts)."""
