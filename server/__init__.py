"""thoughtguard's HTTP gateway: an OpenAI-compatible server that guards a reasoning model."""

from server.app import create_app
from server.config import Settings

__all__ = ["Settings", "create_app"]
