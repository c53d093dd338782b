"""The HTTP API: the ASGI app (app.py), one router per protocol, auth, security, metrics."""
