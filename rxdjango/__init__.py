"""RxDjango: keep Django model state in sync with browsers over WebSockets.

The public API lives in :mod:`rxdjango.channels`, :mod:`rxdjango.operations`,
:mod:`rxdjango.relations`, :mod:`rxdjango.exceptions` and :mod:`rxdjango.testing`.
Modules whose names start with an underscore are internal.
"""

__version__ = "0.1.0.dev0"
__all__ = ["__version__"]
