"""Create the demo job tree once and print how to connect to it."""

from django.core.management.base import BaseCommand
from rest_framework.authtoken.models import Token

from jobs.models import Job


class Command(BaseCommand):
    help = "Seed demo data (idempotent) and print the WebSocket URL and tokens."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args, **options):
        from support import build_world

        if not Job.objects.exists():
            build_world()
        job = Job.objects.order_by("id").first()
        self.stdout.write(f"WebSocket: ws://127.0.0.1:{options['port']}/ws/job/{job.pk}/")
        for token in Token.objects.select_related("user").order_by("user__username"):
            self.stdout.write(f'  first frame as {token.user.username}: {{"token": "{token.key}"}}')
