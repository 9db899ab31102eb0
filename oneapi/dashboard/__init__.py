"""The operator's window: read-only pages at /ui/, the JSON they read, the request log, billing and channel probes.

Nothing here changes config (that stays in git). Whoever signs in with the admin key sees every token and
channel; a client key sees only its own token. The pages are static files shipped in the package (no CDN, no
build step), served under a Content-Security-Policy that allows nothing but this origin's own files; charts are
SVG drawn by the server (charts.py says why).
"""

from __future__ import annotations

from .window import Viewer, Window

__all__ = ["Viewer", "Window"]
