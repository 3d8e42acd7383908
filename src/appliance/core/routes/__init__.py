"""Routes: names that clients call like a model, splitting traffic over arms (A/B), moving a canary by itself,
and copying requests to shadow arms.

``spec`` is the declaration and its checks, ``route`` one route at run time (choosing arms, counting, shadows,
the canary's state), ``canary`` the analysis, ``store`` the routes file, ``table`` the routes of a server.
"""

from .canary import Verdict
from .route import Route
from .spec import RouteSpec, parse_route
from .table import RouteTable

__all__ = ["Route", "RouteSpec", "RouteTable", "Verdict", "parse_route"]
