"""The ``society5`` command."""
