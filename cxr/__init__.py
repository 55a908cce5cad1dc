"""Chest X-ray COVID-19 classifier. ``core`` is shared by training and serving; ``data``,
``train``, ``serve`` and ``monitor`` hold the plain functions behind each stage."""

__version__ = "0.1.0"
