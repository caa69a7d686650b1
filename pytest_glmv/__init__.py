"""pytest-glmv: conformance and SLO checks for servers that serve GLM-4V models."""
__version__ = "0.1.0"
