import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchproject.settings")
django_application = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from jobs.channels import JobChannel  # noqa: E402

routes = [path("ws/job/<int:job_id>/", JobChannel.as_asgi())]
# BENCH_PEERS=rx serves RxDjango alone: DCRF's model observers, registered when its
# consumers are imported, would serialize and publish every save of a task.
if os.environ.get("BENCH_PEERS", "all") == "all":
    from .dcrf import JobConsumer, TaskConsumer, TaskGroupConsumer
    from .floor import floor_app

    routes += [
        path("dcrf/tasks/", TaskConsumer.as_asgi()),
        path("dcrf/task-group/", TaskGroupConsumer.as_asgi()),
        path("dcrf/jobs/", JobConsumer.as_asgi()),
        path("floor/", floor_app),
    ]

application = ProtocolTypeRouter({"http": django_application, "websocket": URLRouter(routes)})
