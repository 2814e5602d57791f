from rxdjango.channels import ContextChannel

from .models import Job, Participant
from .serializers import JobBriefSerializer, JobSerializer, LabelDetailSerializer


class JobChannel(ContextChannel):
    """One job and everything under it; open to the participants of its project."""

    class Meta:
        state = JobSerializer()

    @staticmethod
    def has_permission(user, job_id):
        if user.is_staff:
            return True
        return Participant.objects.filter(user=user, project__jobs__pk=job_id).exists()


class ProjectJobsChannel(ContextChannel):
    """The jobs of one project, as a list channel."""

    class Meta:
        state = JobBriefSerializer(many=True)

    def list_instances(self, project_id):
        return Job.objects.filter(project_id=project_id).order_by("id")


class LabelChannel(ContextChannel):
    class Meta:
        state = LabelDetailSerializer()
