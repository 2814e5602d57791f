from django.urls import path

from .channels import BoardChannel

websocket_urlpatterns = [path("ws/board/<int:board_id>/", BoardChannel.as_asgi())]
