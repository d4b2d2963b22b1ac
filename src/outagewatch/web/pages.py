"""Server-rendered pages (being written)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI

if TYPE_CHECKING:
    from outagewatch.web.app import Server


def build_pages(app: FastAPI, server: Server) -> None:
    return None
