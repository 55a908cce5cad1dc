"""Serving helpers the BentoML service imports: HTTP guards and the prediction log (and a
subprocess wrapper around `bentoml serve`)."""
