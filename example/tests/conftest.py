"""Browser fixtures shared by the example's tests."""

from test_browser import browser, pages  # noqa: F401 - fixtures
