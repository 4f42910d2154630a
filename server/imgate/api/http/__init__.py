"""GatewayService as HTTP/JSON: routes from the proto's google.api.http options, served
by the same operations as gRPC (api.service), plus openapi.json and the console."""

from imgate.api.http.server import HttpServer

__all__ = ["HttpServer"]
