import mimetypes
import posixpath
from pathlib import Path

from django.conf import settings
from django.contrib import admin
from django.contrib.staticfiles import finders
from django.core.exceptions import SuspiciousFileOperation
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import path, re_path
from django.utils._os import safe_join
from rest_framework.authtoken.views import obtain_auth_token

# Files are answered as plain responses read into memory, not as FileResponse (what
# django.views.static.serve returns): under ASGI, Django warns about every streaming
# response with a synchronous iterator. The bundle is small, and this is a demo server.


def _file(file: Path | None, cache_control: str) -> HttpResponse:
    if file is None or not file.is_file():
        raise Http404("not found")
    content_type, _encoding = mimetypes.guess_type(file.name)
    response = HttpResponse(
        file.read_bytes(), content_type=content_type or "application/octet-stream"
    )
    response["Cache-Control"] = cache_control
    return response


def _under(root: Path, relative: str) -> Path | None:
    """``root / relative``, or None for a path that would leave ``root``."""
    try:
        return Path(safe_join(root, relative))
    except (SuspiciousFileOperation, ValueError):  # outside root, or a NUL in the name
        return None


def index(request: HttpRequest) -> HttpResponse:
    """The built React app (``make demo`` builds it into frontend/dist)."""
    page = settings.FRONTEND_DIST / "index.html"
    if not page.exists():
        return HttpResponse("The frontend is not built: run `make demo`.", status=503)
    return _file(page, "no-cache")


def asset(request: HttpRequest, name: str) -> HttpResponse:
    """A file of the Vite bundle; its name carries a content hash, so it never changes."""
    return _file(
        _under(settings.FRONTEND_DIST / "assets", name), "public, max-age=31536000, immutable"
    )


def static(request: HttpRequest, name: str) -> HttpResponse:
    """The admin's static files in development, found as ``runserver`` finds them."""
    try:
        found = finders.find(posixpath.normpath(name).lstrip("/"))
    except SuspiciousFileOperation:  # a path that leaves the static folders
        found = None
    return _file(Path(found) if isinstance(found, str) else None, "no-cache")


urlpatterns = [
    path("api/login/", obtain_auth_token),
    path("admin/", admin.site.urls),
    re_path(r"^assets/(?P<name>.+)$", asset),
    path("", index),
]
if settings.DEBUG:
    urlpatterns.append(re_path(rf"^{settings.STATIC_URL.strip('/')}/(?P<name>.+)$", static))
