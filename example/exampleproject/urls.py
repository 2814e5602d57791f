from django.conf import settings
from django.contrib import admin
from django.contrib.staticfiles.urls import staticfiles_urlpatterns
from django.http import FileResponse, HttpResponse
from django.urls import path, re_path
from django.views.static import serve
from rest_framework.authtoken.views import obtain_auth_token


def index(request):
    """The built React app (``make demo`` builds it into frontend/dist)."""
    page = settings.FRONTEND_DIST / "index.html"
    if not page.exists():
        return HttpResponse("The frontend is not built: run `make demo`.", status=503)
    return FileResponse(page.open("rb"), content_type="text/html")


urlpatterns = [
    path("api/login/", obtain_auth_token),
    path("admin/", admin.site.urls),
    re_path(r"^assets/(?P<path>.*)$", serve, {"document_root": settings.FRONTEND_DIST / "assets"}),
    path("", index),
    *staticfiles_urlpatterns(),
]
