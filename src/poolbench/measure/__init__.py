"""Measuring: executors (threads, asyncio, processes), phases, recorders, the harness."""
