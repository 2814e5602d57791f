from django.http import HttpResponse, JsonResponse
from django.urls import path

from rxdjango.health import health
from rxdjango.metrics import metrics

# Named for the hyperlinked fields of tests/test_serializer_patterns.py.
urlpatterns = [
    path("api/boards/<int:pk>/", lambda request, pk: HttpResponse(), name="board-detail"),
    path("api/users/<int:pk>/", lambda request, pk: HttpResponse(), name="user-detail"),
    path("rxdjango/health/", health),
    path("rxdjango/metrics/", metrics),
    # What a request looks like to Django (the proxy test: behind nginx).
    path("api/request/", lambda request: JsonResponse({"host": request.get_host()})),
]
