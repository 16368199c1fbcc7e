"""Poolers between the strategies and the server: PgBouncer started by poolbench, or one the
user runs; the routes a run takes (direct, pgbouncer:session, pgbouncer:transaction, pooler)."""
