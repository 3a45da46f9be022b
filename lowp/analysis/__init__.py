"""lowp.analysis (see docs/architecture.md)."""
