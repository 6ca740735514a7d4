"""The job side: what runs inside a cluster job, and nothing else.

The worker (claim a learner, run it, save, report), its client of the database manager,
the packer of a packed allocation, the executors, the task's set-up and its log. Modules here
import ``adaptive_runner.common`` and ``adaptive_runner.errors`` only, never the login side
(no jinja2, ipywidgets, pandas, sqlite3, structlog, managers or scheduler backends): a task
pays for each import at start-up, on every node. Only the entry points
``python -m adaptive_runner.worker`` and ``python -m adaptive_runner.packing`` import this
package. The import contracts in ``.importlinter`` hold this.
"""
