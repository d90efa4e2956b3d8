"""The interface of a client dialect: which endpoints need a model, how errors look."""

from __future__ import annotations

from abc import ABC, abstractmethod

from gateway.errors import GatewayError


class Dialect(ABC):
    """A client wire format. Stateless; one instance per dialect."""

    name: str
    # POST endpoints whose body must be JSON with a string `model`.
    model_endpoints: frozenset[str]

    @abstractmethod
    def error_body(self, err: GatewayError) -> bytes:
        """The JSON body of an error response."""

    @abstractmethod
    def stream_error_event(self, err: GatewayError) -> bytes:
        """The SSE event that ends a stream which failed after its first byte."""
