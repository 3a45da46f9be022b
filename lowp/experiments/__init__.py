"""lowp.experiments (see docs/architecture.md)."""
