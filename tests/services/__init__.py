"""Tests of the regional services."""
