"""The status panel: ``snapshot`` reads and renders state.sqlite, ``panel`` is the ipywidgets UI.

Importing this package does not import ipywidgets; ``adaptive_runner.widgets.panel`` does.
"""

from __future__ import annotations

from adaptive_runner.widgets.snapshot import StatusSnapshot, View

__all__ = ["StatusSnapshot", "View"]
