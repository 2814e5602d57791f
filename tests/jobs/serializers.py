from django.contrib.auth import get_user_model
from rest_framework import serializers

from .models import (
    Asset,
    Deadline,
    Job,
    JobSpec,
    Label,
    Note,
    NoteComment,
    NoteReaction,
    Participant,
    Project,
    Task,
)


class UserSerializer(serializers.ModelSerializer):
    class Meta:
        model = get_user_model()
        fields = ["id", "username"]


class ParticipantSerializer(serializers.ModelSerializer):
    user = UserSerializer()

    class Meta:
        model = Participant
        fields = ["id", "role", "user"]


class LabelSerializer(serializers.ModelSerializer):
    class Meta:
        model = Label
        fields = ["id", "name"]


class TaskSerializer(serializers.ModelSerializer):
    developer = ParticipantSerializer()
    labels = LabelSerializer(many=True)
    title_length = serializers.SerializerMethodField()

    class Meta:
        model = Task
        fields = ["id", "title", "done", "developer", "labels", "title_length"]

    def get_title_length(self, task: Task) -> int:
        return len(task.title)


class AssetSerializer(serializers.ModelSerializer):
    class Meta:
        model = Asset
        fields = ["id", "name"]


class DeadlineSerializer(serializers.ModelSerializer):
    class Meta:
        model = Deadline
        fields = ["id", "due", "label"]


class JobSpecSerializer(serializers.ModelSerializer):
    class Meta:
        model = JobSpec
        fields = ["id", "text"]


class NoteReactionSerializer(serializers.ModelSerializer):
    class Meta:
        model = NoteReaction
        fields = ["id", "emoji"]


class NoteCommentSerializer(serializers.ModelSerializer):
    reactions = NoteReactionSerializer(many=True)

    class Meta:
        model = NoteComment
        fields = ["id", "text", "reactions"]


class NoteSerializer(serializers.ModelSerializer):
    comments = NoteCommentSerializer(many=True)

    class Meta:
        model = Note
        fields = "__all__"
        user_key = "owner"


class ProjectSerializer(serializers.ModelSerializer):
    participants = ParticipantSerializer(many=True)

    class Meta:
        model = Project
        fields = ["id", "name", "participants"]


class JobSerializer(serializers.ModelSerializer):
    project = ProjectSerializer()
    tasks = TaskSerializer(many=True)
    asset_set = AssetSerializer(many=True)
    deadlines = DeadlineSerializer(many=True)
    spec = JobSpecSerializer()
    notes = NoteSerializer(many=True)
    team = ParticipantSerializer(many=True)

    class Meta:
        model = Job
        fields = [
            "id",
            "title",
            "budget",
            "starts",
            "project",
            "tasks",
            "asset_set",
            "deadlines",
            "spec",
            "notes",
            "team",
        ]


class JobBriefSerializer(serializers.ModelSerializer):
    tasks = TaskSerializer(many=True)

    class Meta:
        model = Job
        fields = ["id", "title", "tasks"]


class TaskBriefSerializer(serializers.ModelSerializer):
    class Meta:
        model = Task
        fields = ["id", "title"]


class LabelDetailSerializer(serializers.ModelSerializer):
    """The reverse side of Task.labels."""

    tasks = TaskBriefSerializer(many=True)

    class Meta:
        model = Label
        fields = ["id", "name", "tasks"]
