"""Chest X-ray COVID-19 classifier: config, preprocessing and models shared by
training and serving, plus the plain functions behind each pipeline stage."""

__version__ = "0.1.0"
