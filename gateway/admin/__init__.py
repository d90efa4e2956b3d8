"""The admin API: every route under /admin/ requires the admin token; /admin is the page."""

from __future__ import annotations

from aiohttp import web

from gateway.admin import requests, spend
from gateway.admin.auth import admin_only
from gateway.admin.page import page_handler
from gateway.admin.reload import reload

__all__ = ["add_admin_routes", "admin_only"]


def add_admin_routes(app: web.Application) -> None:
    app.router.add_get("/admin/keys", admin_only(spend.keys))
    app.router.add_get("/admin/stats", admin_only(spend.stats))
    app.router.add_get("/admin/requests", admin_only(requests.recent_requests))
    app.router.add_post("/admin/reload", admin_only(reload))
    # The page carries no data; its script sends the token to the endpoints above.
    app.router.add_get("/admin", page_handler())
