"""Shared by training and serving: configuration, errors, the one preprocessing function,
image statistics, devices, run folders and the model store."""
