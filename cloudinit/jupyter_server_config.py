# Written by bakery; every trainee's server reads it (JUPYTER_CONFIG_PATH, set by the hub).
# A class logging in at once keeps the hub busy: a server waits up to 2 minutes for the hub's
# OAuth answers, not tornado's 20 s (after which the trainee got "500: Internal Server Error").
try:
    from tornado.httpclient import AsyncHTTPClient
except ImportError:
    pass
else:
    _base = AsyncHTTPClient.configured_class()

    class _Patient(_base):  # the hub extension's own configure() keeps a configured class
        def initialize(self, defaults=None, **kwargs):
            wait = {"connect_timeout": 120, "request_timeout": 120}
            super().initialize(defaults={**wait, **(defaults or {})}, **kwargs)

    if not _base.__name__ == "_Patient":  # read twice (the app, then its extension)
        AsyncHTTPClient.configure(_Patient)
