"""imgate: a gRPC gateway that sends one instant message to many users through IM vendors."""

__version__ = "0.1.0"
