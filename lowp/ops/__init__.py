"""lowp.ops (see docs/architecture.md)."""
