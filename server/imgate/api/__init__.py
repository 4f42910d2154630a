"""The gRPC face of the gateway: server life cycle, servicer, validation, callers."""
