"""The ipywidgets status panel (``panel``), its log view and its live plot: notebooks only.

What they show comes from ``adaptive_runner.status``. Importing this package does not import
ipywidgets (``adaptive_runner.widgets.panel`` does); it re-exports ``StatusSnapshot`` and
``View``, which notebooks name. Layer "widgets" of ``.importlinter``: on top, beside the CLI.
"""

from __future__ import annotations

from adaptive_runner.status.snapshot import StatusSnapshot, View

__all__ = ["StatusSnapshot", "View"]
