"""The HTTP service and its web page (``serve.py``): one Translator behind Starlette, one worker thread for torch."""

from .app import create_app

__all__ = ["create_app"]
