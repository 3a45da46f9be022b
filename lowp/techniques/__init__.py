"""lowp.techniques (see docs/architecture.md)."""
