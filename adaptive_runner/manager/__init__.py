"""What a ``RunManager`` starts on the login node, and ``Run``, the handle that reads a run.

``spec`` checks a run's options once, ``run_setup`` writes the run directory, ``run`` and
``run_manager`` are the user's handles; the database manager (ZeroMQ server) and the job
manager (submit, poll, reclaim) run as threads; ``submissions``, ``error_watch``,
``reasons`` and ``logs`` serve them. Imports status, schedulers, state and common; never
the job side or the widgets (``.importlinter``, layer "manager").
"""
