"""A small webapp2 site using webapp2_sessions.

Pages: a visit counter (/), a form that remembers a note (/note), login and
logout (/login, /logout) and a health check that never touches the session
(/health).

Run it with ``python examples/app.py`` and open http://127.0.0.1:8080/. It uses
the embedded store unless ``MEMCACHE_SERVERS`` lists memcached servers
(``host:port``, comma-separated).
"""

from __future__ import annotations

import html
import os
import secrets
import sys
from typing import Any

import webapp2

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from webapp2_sessions import SessionHandlerMixin

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>webapp2_sessions demo</title></head>
<body>
<nav><a href="/">counter</a> | <a href="/note">note</a> | {auth}</nav>
{flashes}
{body}
</body></html>
"""


class BaseHandler(SessionHandlerMixin, webapp2.RequestHandler):
    def render(self, body: str) -> None:
        user = self.get_session_var("user")
        if user:
            auth = (
                f"signed in as <b>{html.escape(user)}</b> "
                '<form method="post" action="/logout" style="display:inline">'
                "<button>log out</button></form>"
            )
        else:
            auth = '<a href="/login">log in</a>'
        flashes = "".join(
            f'<p class="flash {html.escape(level or "info")}">{html.escape(str(msg))}</p>'
            for msg, level in self.get_flashes()
        )
        self.response.write(PAGE.format(auth=auth, flashes=flashes, body=body))


class CounterHandler(BaseHandler):
    """Counts this browser's visits (read 1, write 1 per request)."""

    session_prefetch = ("visits", "user")

    def get(self) -> None:
        visits = self.get_session_var("visits", 0) + 1
        self.set_session_var("visits", visits)
        self.render(f"<h1>Visit number {visits}</h1>")


class NoteHandler(BaseHandler):
    """Stores a short text the user typed."""

    def get(self) -> None:
        note = self.get_session_var("note", "")
        self.render(
            "<h1>Your note</h1>"
            f"<p>{html.escape(note) or '<i>empty</i>'}</p>"
            '<form method="post"><input name="note" maxlength="200">'
            "<button>save</button></form>"
        )

    def post(self) -> None:
        self.set_session_var("note", self.request.POST.get("note", "")[:200])
        self.add_flash("Note saved.", "success")
        self.redirect("/note")


class LoginHandler(BaseHandler):
    def get(self) -> None:
        self.render(
            '<h1>Log in</h1><form method="post"><input name="user" placeholder="any name">'
            "<button>log in</button></form>"
        )

    def post(self) -> None:
        user = self.request.POST.get("user", "").strip()[:40]
        if not user:
            self.add_flash("Pick a name.", "error")
            self.redirect("/login")
            return
        # A new id at login: an id planted before login is worthless after it.
        self.regenerate_session_id()
        self.set_session_var("user", user)
        self.add_flash(f"Welcome, {user}.", "success")
        self.redirect("/")


class LogoutHandler(BaseHandler):
    def post(self) -> None:
        self.destroy_session()
        self.add_flash("Logged out.", "info")
        self.redirect("/")


class HealthHandler(BaseHandler):
    """Never touches the session: costs no store operation, sets no cookie."""

    def get(self) -> None:
        self.response.content_type = "text/plain"
        self.response.write("ok")


ROUTES = [
    ("/", CounterHandler),
    ("/note", NoteHandler),
    ("/login", LoginHandler),
    ("/logout", LogoutHandler),
    ("/health", HealthHandler),
]


def make_app(
    settings: dict[str, Any] | None = None, debug: bool = False
) -> webapp2.WSGIApplication:
    """The demo application; ``settings`` replace the environment-derived ones."""
    if settings is None:
        settings = {"cookie_name": "demo_session"}
        servers = os.environ.get("MEMCACHE_SERVERS", "").strip()
        if servers:
            settings["memcache_servers"] = [s.strip() for s in servers.split(",") if s.strip()]
        settings["secret_key"] = os.environ.get("SESSION_SECRET") or secrets.token_urlsafe(32)
    return webapp2.WSGIApplication(ROUTES, debug=debug, config={"webapp2_sessions": settings})


def main() -> None:
    import logging
    from wsgiref.simple_server import make_server

    logging.basicConfig(level=logging.INFO)
    host, port = "127.0.0.1", int(os.environ.get("PORT", "8080"))
    app = make_app()
    print(f"Serving on http://{host}:{port}/ (Ctrl-C to stop)", flush=True)
    with make_server(host, port, app) as server:
        server.serve_forever()


if __name__ == "__main__":
    main()
