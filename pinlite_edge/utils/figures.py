"""Figures drawn off-screen without touching the host's matplotlib state.

``matplotlib.use("Agg", force=True)`` plus pyplot switched the process's backend: an app or notebook embedding the
SDK stopped showing its own plots after one saved explanation. A :class:`~matplotlib.figure.Figure` given its own
Agg canvas needs neither pyplot nor the global backend, and is freed with its last reference (no ``plt.close``).
"""
from __future__ import annotations

from typing import Any


def agg_figure(**figure_kwargs: Any) -> Any:
    """A new ``matplotlib.figure.Figure`` (``figsize=`` etc.) drawn by its own Agg canvas, outside pyplot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**figure_kwargs)
    FigureCanvasAgg(fig)
    return fig


def colormap(name: str) -> Any:
    """A registered colormap by name (``"inferno"``), without pyplot."""
    import matplotlib

    return matplotlib.colormaps[name]
