"""Change a task from a separate process (the cross-process tests run this)."""

from django.core.management.base import BaseCommand

from jobs.models import Task


class Command(BaseCommand):
    help = "Retitle or delete a task."

    def add_arguments(self, parser):
        parser.add_argument("task", type=int)
        parser.add_argument("--title")
        parser.add_argument("--delete", action="store_true")

    def handle(self, *args, **options):
        task = Task.objects.get(pk=options["task"])
        if options["delete"]:
            task.delete()
        else:
            task.title = options["title"]
            task.save()
        self.stdout.write("done")
