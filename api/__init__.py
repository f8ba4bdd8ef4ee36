"""The HTTP API (FastAPI) and the operator page."""
