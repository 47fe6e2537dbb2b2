"""Shared test fixtures. Backend-specific fixtures live next to their tests."""
