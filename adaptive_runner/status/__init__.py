"""A run as plain data and HTML, without ipywidgets: what the CLI, ``Run`` and the panel show.

``snapshot`` reads ``state.sqlite``, ``totals`` and ``queue`` add the figures and the queue
view, ``report`` writes text and HTML, ``log_parser`` reads the task logs incrementally,
``log_lines`` formats their lines for people.
Imports the schedulers, the state and ``adaptive_runner.common``, never the managers or
ipywidgets (``.importlinter``, layer "status"). ``log_filter`` keeps the parts of the task
logs that chosen learners, or the jobs that failed, wrote.
"""
