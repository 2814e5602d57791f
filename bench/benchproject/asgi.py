import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchproject.settings")
django_application = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from .dcrf import JobConsumer, TaskConsumer  # noqa: E402
from .floor import floor_app  # noqa: E402
from jobs.channels import JobChannel  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_application,
        "websocket": URLRouter(
            [
                path("ws/job/<int:job_id>/", JobChannel.as_asgi()),
                path("dcrf/tasks/", TaskConsumer.as_asgi()),
                path("dcrf/jobs/", JobConsumer.as_asgi()),
                path("floor/", floor_app),
            ]
        ),
    }
)
