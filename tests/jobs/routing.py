from django.urls import path

from .channels import JobChannel, LabelChannel, ProjectJobsChannel

websocket_urlpatterns = [
    path("ws/job/<int:job_id>/", JobChannel.as_asgi()),
    path("ws/project/<int:project_id>/jobs/", ProjectJobsChannel.as_asgi()),
    path("ws/label/<int:label_id>/", LabelChannel.as_asgi()),
]
