"""Whether this process can serve clients now: a view for load balancers and orchestrators.

Add it to the project's URLs (``path("rxdjango/health/", health)``). It answers 200
``{"status": "ready"}`` once the backend answers (Redis reachable and subscribed) and
the relay of each database's change log runs, so that changes made by other processes
reach this process's clients; otherwise 503 with the reasons, and while the process
shuts down (SIGTERM: it drains its clients, see ``_shutdown``). Checking starts what a
serving process runs, so a process that no client reached yet becomes ready too.
"""

from __future__ import annotations

from django.db import router
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from . import _registry, _shutdown
from ._backends import get_backend
from ._capture import capturing
from ._relay import ensure_relay, relay_running

__all__ = ["health", "unready"]


def unready() -> list[str]:
    """Why this process cannot serve clients now (empty: it can). ORM code."""
    reasons = []
    if _shutdown.draining():
        return ["shutting down"]
    backend_reason = get_backend().unready()
    if backend_reason is not None:
        reasons.append(backend_reason)
    databases = {router.db_for_read(spec.state_model().anchor_model) for spec in _registry.specs()}
    for using in sorted(databases):
        if not capturing(using):
            continue  # changes reach clients through signals only: nothing to run
        ensure_relay(using)
        if not relay_running(using):
            reasons.append(f"the change relay of database {using!r} is not running")
    return reasons


@require_GET
def health(request: HttpRequest) -> JsonResponse:
    """200 when this process is ready to serve clients, 503 with the reasons when not."""
    reasons = unready()
    if reasons:
        return JsonResponse({"status": "unavailable", "reasons": reasons}, status=503)
    return JsonResponse({"status": "ready"})
