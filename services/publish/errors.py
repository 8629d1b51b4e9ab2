"""The one exception of the publishing package."""

from __future__ import annotations

from services.errors import PersonadError


class PublishError(PersonadError):
    """Publishing, activating or removing a model version failed.

    ``server_error`` holds the Ollama server's own words and ``status`` its HTTP status
    where the failure came from the server; the message always says what was being done.
    """

    def __init__(
        self, message: str, *, server_error: str | None = None, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.server_error = server_error
        self.status = status
