"""Helpers the shipped suites share, one module per area; logic here, assertions in suites/."""
