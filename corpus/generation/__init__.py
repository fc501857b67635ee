"""RAFT generation: jobs, units, model calls, prompt overrides, and the worker-side runner."""
