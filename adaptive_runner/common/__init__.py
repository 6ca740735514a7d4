"""Both sides: what the worker in a cluster job and the managers on the login node share.

The run directory's layout and run.json, the wire protocol, the names and line formats two
processes must agree on (``vocabulary``), who a task is, goals, keys, atomic writes, input
checks, the learners' data files and their stored functions. Modules here import only the
standard library, pyzmq, ``adaptive_runner.errors`` and each other (cloudpickle and adaptive
where a learner is touched): every task imports them at start-up. The import contracts in
``.importlinter`` hold this.
"""
