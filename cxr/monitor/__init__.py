"""Monitoring: the drift reference, the drift check against the prediction log, alerts."""
