"""A project-management tree used to exercise every kind of relation."""

import uuid

from django.conf import settings
from django.db import models

from rxdjango.relations import related_property


class Project(models.Model):
    name = models.CharField(max_length=100)


class Participant(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="participants")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="participations"
    )
    role = models.CharField(max_length=50, default="developer")

    class Meta:
        ordering = ["id"]


class Label(models.Model):
    name = models.CharField(max_length=50)

    class Meta:
        ordering = ["name"]


class Job(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="jobs")
    title = models.CharField(max_length=100)
    budget = models.DecimalField(max_digits=10, decimal_places=2, default=0)
    starts = models.DateTimeField(null=True, blank=True)

    @related_property("project__jobs")
    def team(self):
        """Everyone taking part in this job's project (a computed relation)."""
        return Participant.objects.filter(project__jobs=self)


class JobSpec(models.Model):
    job = models.OneToOneField(Job, on_delete=models.CASCADE, related_name="spec")
    text = models.TextField(default="")


class Task(models.Model):
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="tasks")
    title = models.CharField(max_length=100)
    done = models.BooleanField(default=False)
    developer = models.ForeignKey(
        Participant, null=True, blank=True, on_delete=models.SET_NULL, related_name="tasks"
    )
    labels = models.ManyToManyField(Label, related_name="tasks", blank=True)

    class Meta:
        ordering = ["id"]


class Asset(models.Model):
    """UUID primary key, reverse accessor left at the default ``asset_set``."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    job = models.ForeignKey(Job, on_delete=models.CASCADE)
    name = models.CharField(max_length=100, unique=True)

    class Meta:
        ordering = ["name"]


class Deadline(models.Model):
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="deadlines")
    due = models.DateField()
    label = models.CharField(max_length=100)

    class Meta:
        ordering = ["due"]


class Note(models.Model):
    """A private note: only its owner may see it (``user_key``)."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="notes")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    text = models.CharField(max_length=200)

    class Meta:
        ordering = ["id"]
        unique_together = [("job", "owner", "text")]


class NoteComment(models.Model):
    """Under a private note: private to the note's owner too (one level down)."""

    note = models.ForeignKey(Note, on_delete=models.CASCADE, related_name="comments")
    text = models.CharField(max_length=200)

    class Meta:
        ordering = ["id"]


class NoteReaction(models.Model):
    """Two levels under a private note."""

    comment = models.ForeignKey(NoteComment, on_delete=models.CASCADE, related_name="reactions")
    emoji = models.CharField(max_length=20)

    class Meta:
        ordering = ["id"]
