"""RPC layer: the request envelope, the handler protocol and the registry."""
