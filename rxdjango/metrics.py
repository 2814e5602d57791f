"""Prometheus metrics of a serving process (``pip install 'rxdjango[prometheus]'``).

Add the view to the project's URLs (``path("rxdjango/metrics/", metrics)``) and scrape
it. Under gunicorn or ``uvicorn --workers``, set ``PROMETHEUS_MULTIPROC_DIR`` (an
empty directory, per host) before the processes start: a scrape then reports the sum
over the live processes, whichever one answers. The metrics are described in
docs/production.md.
"""

from __future__ import annotations

import os

from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from . import _telemetry
from ._backends import get_backend

__all__ = ["metrics"]


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """The metrics in Prometheus' text format."""
    if not _telemetry.ENABLED:
        raise ImproperlyConfigured(
            "rxdjango.metrics needs prometheus_client: pip install 'rxdjango[prometheus]'"
        )
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        REGISTRY,
        CollectorRegistry,
        generate_latest,
        multiprocess,
    )

    _telemetry.anchors_cached.set(get_backend().anchors_cached())
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
