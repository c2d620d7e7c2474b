"""The commands' PNG plots: matplotlib on its file-only backend, a figure in, PNG bytes out."""

from __future__ import annotations

import io
from typing import Any


def subplots(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
    """``matplotlib.pyplot.subplots`` on the Agg backend (no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt.subplots(*args, **kwargs)


def png(figure: Any) -> bytes:
    """``figure`` laid out and rendered as PNG bytes (100 dpi), then closed."""
    from matplotlib import pyplot as plt

    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()
