"""The node: configuration, the composition root and the HTTP surface."""
