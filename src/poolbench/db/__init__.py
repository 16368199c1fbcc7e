"""The database side: embedded server, admin session, connection targets, workload SQL."""
