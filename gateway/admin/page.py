"""GET /admin: one self-contained HTML page; its script asks for the admin token itself.

The page holds no data, so it is served without the token: the script keeps the token in
sessionStorage (or takes it once from `#token=...` in the URL) and sends it as a Bearer token
to /admin/stats and /admin/requests, which do require it.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import resources

from aiohttp import web

from gateway.admin.auth import Handler

_INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)


def _csp_hash(text: str) -> str:
    digest = hashlib.sha256(text.encode()).digest()
    return "'sha256-" + base64.b64encode(digest).decode() + "'"


def content_security_policy(html: str) -> str:
    """SECURITY: only this page's own inline script and style run; it talks to its origin."""
    blocks = _INLINE.findall(html)
    scripts = " ".join(_csp_hash(body) for kind, body in blocks if kind == "script")
    styles = " ".join(_csp_hash(body) for kind, body in blocks if kind == "style")
    return (
        f"default-src 'none'; script-src {scripts}; style-src {styles}; "
        "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )


def page_handler() -> Handler:
    """Reads the page once (when the app is built) and serves it from memory."""
    html = resources.files("gateway.admin").joinpath("page.html").read_text(encoding="utf-8")
    body = html.encode()
    headers = {
        "Content-Type": "text/html; charset=utf-8",
        "Content-Security-Policy": content_security_policy(html),
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
    }

    async def admin_page(request: web.Request) -> web.Response:
        return web.Response(body=body, headers=headers)

    return admin_page
