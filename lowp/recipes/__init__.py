"""lowp.recipes (see docs/architecture.md)."""
