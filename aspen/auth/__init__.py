"""Capability tokens (Biscuit) and the node's authentication and authorisation."""
