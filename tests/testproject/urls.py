from django.http import HttpResponse
from django.urls import path

# Named for the hyperlinked fields of tests/test_serializer_patterns.py.
urlpatterns = [
    path("api/boards/<int:pk>/", lambda request, pk: HttpResponse(), name="board-detail"),
    path("api/users/<int:pk>/", lambda request, pk: HttpResponse(), name="user-detail"),
]
