"""The NGSI-LD context broker: entities, queries, JSON-LD contexts, and the Python API services use."""
