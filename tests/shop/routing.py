from django.urls import path

from .channels import CustomerOrdersChannel, OrderChannel

websocket_urlpatterns = [
    path("ws/order/<int:order_id>/", OrderChannel.as_asgi()),
    path("ws/customer/<int:customer_id>/orders/", CustomerOrdersChannel.as_asgi()),
]
