"""Client dialects: the formats clients speak besides the canonical OpenAI chat form, declared in
dialects.d/ and read by one engine.

A request in a dialect is relayed as sent where the channel's vendor speaks that dialect (native.py); everywhere
else it is read into the canonical form (OpenAI chat), relayed like any chat request, and its answer written
back in the dialect (answers.py, events.py). spec.py reads the files, counting.py answers count_tokens.
"""

from .spec import Dialect, Route, RouteMatch, load_dialects, match_route

__all__ = ["Dialect", "Route", "RouteMatch", "load_dialects", "match_route"]
