from rxdjango.channels import ContextChannel

from .serializers import BoardSerializer


class BoardChannel(ContextChannel):
    class Meta:
        state = BoardSerializer()

    @staticmethod
    def has_permission(user, board_id):
        return True
