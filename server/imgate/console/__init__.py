"""The web console: static files served by the HTTP layer at / (imgate.api.http)."""
