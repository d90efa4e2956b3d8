"""llm-gateway: a reverse proxy for LLM providers."""

__version__ = "0.1.0"
