from django.urls import path

from .channels import BoardChannel, MyBoardsChannel

websocket_urlpatterns = [
    path("ws/boards/", MyBoardsChannel.as_asgi()),
    path("ws/board/<int:board_id>/", BoardChannel.as_asgi()),
]
