"""Tests of the bears service."""
