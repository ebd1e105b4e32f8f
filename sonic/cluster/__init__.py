"""Cluster description (the YAML cluster file) and the local cluster harness."""
