"""ASGI entry point of the test project: the channels of its apps."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
django_application = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from patterns.routing import websocket_urlpatterns as pattern_urlpatterns  # noqa: E402
from shop.routing import websocket_urlpatterns as shop_urlpatterns  # noqa: E402

from jobs.routing import websocket_urlpatterns  # noqa: E402

if os.environ.get("RX_TEST_BLOCK_TASK_READS_WHILE"):
    # Test hook (the killed-loader test): reads of the task table wait while the file
    # exists, so the test can kill this process in the middle of loading an anchor.
    from jobs.blocking import block_task_reads_while

    block_task_reads_while(os.environ["RX_TEST_BLOCK_TASK_READS_WHILE"])

if os.environ.get("RX_TEST_BLOCK_RELAYED_TASK_READS_WHILE"):
    # Test hook (the killed-lock-holder test): the change relay's reads of the task table
    # wait while the file exists, holding the anchor's lock.
    from jobs.blocking import block_task_reads_while

    block_task_reads_while(os.environ["RX_TEST_BLOCK_RELAYED_TASK_READS_WHILE"], in_relay=True)

if os.environ.get("RX_TEST_PAUSE_LOADS_IN"):
    # Test hook (the load-consistency tests): pause a load between two layers.
    from jobs.blocking import pause_loads_in

    pause_loads_in(os.environ["RX_TEST_PAUSE_LOADS_IN"])

if os.environ.get("RX_TEST_CRASH_BEFORE_RELAYING_WHILE"):
    # Test hook (the capture kill tests): die between a commit and its propagation.
    from jobs.blocking import crash_before_relaying_while

    crash_before_relaying_while(os.environ["RX_TEST_CRASH_BEFORE_RELAYING_WHILE"])

application = ProtocolTypeRouter(
    {
        "http": django_application,
        # As docs/production.md recommends (ALLOWED_HOSTS is "*" but in the proxy test).
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(
                URLRouter(websocket_urlpatterns + shop_urlpatterns + pattern_urlpatterns)
            )
        ),
    }
)
