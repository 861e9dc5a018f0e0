"""A figure as a file: standalone HTML (plotly.js inlined, so it opens offline anywhere),
or PNG/SVG rendered by Kaleido in a headless Chrome/Chromium.

Kaleido (``pip install kaleido``, v1) drives a system browser through choreographer:
it finds ``chromium``/``google-chrome`` on the PATH, or the one ``BROWSER_PATH`` names.
It is given the plotly.js of the installed plotly package and no MathJax, so an export
makes no network request.
"""

from __future__ import annotations

import functools
import logging
import threading
from pathlib import Path
from typing import Any

import plotly
import plotly.graph_objects as go
import plotly.io as pio

log = logging.getLogger("magma_bench.dashboards")

#: the plotly.js that pages load and images are rendered with: the package's own
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
#: figure options on every page and export: no "edit in Chart Studio", no plotly logo
PLOT_CONFIG: dict[str, Any] = {"displaylogo": False, "responsive": True}
MEDIA_TYPES = {"html": "text/html; charset=utf-8", "png": "image/png", "svg": "image/svg+xml"}
IMAGE_SIZE = {"width": 1000, "height": 600}
#: seconds one image may take (starting the browser included)
IMAGE_TIMEOUT = 60.0

# One browser at a time: each export starts its own, and a burst of them would each
# take a few hundred MB.
_image_lock = threading.Lock()


class ExportUnavailable(RuntimeError):
    """Image export cannot run here (no Kaleido, or no browser for it)."""


FigureLike = go.Figure | dict[str, Any]


def as_figure(fig: FigureLike) -> go.Figure:
    """A figure dict (see ``embed_html``) validated into a ``Figure``."""
    return fig if isinstance(fig, go.Figure) else go.Figure(fig)


def embed_html(fig: FigureLike, div_id: str) -> str:
    """The figure as a ``<div>`` for a page that loads plotly.js itself. A plain figure
    dict is written out unvalidated (its builder's ``Figure`` twin is what the tests
    check), which is much faster for figures of many traces."""
    if isinstance(fig, dict):
        layout = fig.get("layout", {})
        template = layout.get("template")
        if isinstance(template, str):  # unvalidated output needs the template itself
            fig = {**fig, "layout": {**layout, "template": _template(template)}}
    return pio.to_html(
        fig,
        validate=False,
        full_html=False,
        include_plotlyjs=False,
        div_id=div_id,
        config=PLOT_CONFIG,
        default_height="480px",
    )


@functools.cache
def _template(name: str) -> dict[str, Any]:
    return pio.templates[name].to_plotly_json()


def standalone_html(fig: FigureLike) -> str:
    """A complete HTML document with plotly.js inlined (about 5 MB)."""
    return as_figure(fig).to_html(full_html=True, include_plotlyjs=True, config=PLOT_CONFIG)


def image(fig: FigureLike, format: str) -> bytes:
    """``png`` or ``svg`` bytes, rendered by Kaleido."""
    if format not in ("png", "svg"):
        raise ValueError(f"format must be png or svg, got {format!r}")
    try:
        import kaleido
    except ImportError:
        raise ExportUnavailable(
            f"{format.upper()} export needs kaleido (pip install kaleido) and a Chrome or "
            "Chromium (on the PATH or named by BROWSER_PATH); HTML export works without them"
        ) from None
    kopts = {"plotlyjs": str(PLOTLY_JS), "mathjax": False, "timeout": IMAGE_TIMEOUT}
    opts = {"format": format, "scale": 1, **IMAGE_SIZE}
    try:
        with _image_lock:
            return kaleido.calc_fig_sync(as_figure(fig).to_dict(), opts=opts, kopts=kopts)
    except Exception as exc:  # noqa: BLE001 - a missing browser, a crash, a timeout
        log.exception("image export failed")
        raise ExportUnavailable(
            f"{format.upper()} export failed: {type(exc).__name__}: {exc}. Kaleido needs a "
            "Chrome or Chromium on the PATH or named by BROWSER_PATH"
        ) from exc
