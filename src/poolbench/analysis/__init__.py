"""Analysis of results: comparing runs (and, later, sweeps, models, findings)."""
