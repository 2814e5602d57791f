"""The REST peer: the same nested serializer, with the queries a careful user would write."""

from django.db.models import Prefetch
from django.urls import path
from rest_framework.generics import RetrieveAPIView

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


urlpatterns = [path("api/jobs/<int:pk>/", JobDetail.as_view())]
