"""The run's state on the login side: ``state.sqlite`` as a state machine of learners and tasks.

``Database`` makes each transition one transaction; ``queries`` reads, ``schema`` holds the
tables, statements, rows and migrations, ``file`` checks that the file is (still) a run's.
Imports ``adaptive_runner.common`` only (``.importlinter``, layer "state").
"""
