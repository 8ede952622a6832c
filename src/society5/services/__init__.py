"""Regional services built on the platform (each in its own package; services never import one another)."""
