"""The REST peer: the same nested serializer, with the queries a careful user would write."""

from django.db.models import Prefetch
from django.http import HttpRequest, JsonResponse
from django.urls import path
from rest_framework.generics import RetrieveAPIView

from rxdjango import _metrics

from jobs.models import Job, Participant, Task
from jobs.serializers import JobSerializer

participants = Participant.objects.select_related("user")


class JobDetail(RetrieveAPIView):
    serializer_class = JobSerializer
    queryset = Job.objects.select_related("project", "spec").prefetch_related(
        Prefetch("project__participants", queryset=participants),
        Prefetch(
            "tasks",
            queryset=Task.objects.select_related("developer__user").prefetch_related("labels"),
        ),
        "asset_set",
        "deadlines",
        "notes",
    )


def work(request: HttpRequest) -> JsonResponse:
    """This server process's propagation counters (read before and after a scenario)."""
    return JsonResponse(_metrics.snapshot())


urlpatterns = [
    path("api/jobs/<int:pk>/", JobDetail.as_view()),
    path("bench/work/", work),
]
