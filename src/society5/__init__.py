"""society5: the Hokkaido Society 5.0 platform (NGSI-LD context broker, open data, regional services)."""

__version__ = "0.1.0"
