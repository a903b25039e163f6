"""A small webapp2 site using webapp2_sessions: copy what you need.

Pages:

- ``/``: a visit counter, incremented on the server (``incr_session_var``);
- ``/lists``: two lists, each its own session variable and so its own
  memcached key: edit one in each of two tabs at the same time and neither
  loses the other's work;
- ``/session``: the session's variables, the memcached key each lives under
  and the time it has left;
- ``/login`` and ``/logout``: a new session id at login
  (``regenerate_session_id``) and the session tied to the user
  (``set_session_owner``), a persistent cookie if "remember me" is ticked
  (``set_session_expiry``), every key deleted at logout (``destroy_session``);
  signed in, ``/login`` offers "Sign out other devices"
  (``destroy_other_sessions``, at ``/logout/others``); the id is also
  replaced every 15 minutes (``rotate_after``);
- ``/health``: a health check that never touches the session.

Every form carries the session's CSRF token and every POST handler calls
``check_csrf()`` first.

Run it with ``python examples/app.py`` (or ``make run``) and open
http://127.0.0.1:8080/. Environment:

- ``MEMCACHE_SERVERS``: ``host:port`` list, comma-separated; without it the
  embedded in-process store is used;
- ``SESSION_SECRET``: the key that signs cookies (without it a random one is
  made at each start, and every session ends on restart);
- ``HOST`` and ``PORT``: where to listen (``127.0.0.1`` and ``8080``; port 0
  picks a free one);
- ``ROTATE_AFTER`` and ``ROTATE_GRACE``: seconds before a session's id is
  replaced (900) and how long the old one still leads to it (5); set
  ``ROTATE_AFTER=10 ROTATE_GRACE=2`` to watch the id change on ``/session``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socketserver
import sys
import time
from collections.abc import Mapping
from typing import Any
from wsgiref.simple_server import WSGIServer
from wsgiref.simple_server import make_server as wsgiref_server

import webapp2

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from keyinfo import session_keys, store_name
from layout import TTL_SCRIPT, csrf_field, duration, error_page, esc, page, post_button

from webapp2_sessions import Session, SessionHandlerMixin, UpdateConflictError, rotation

log = logging.getLogger("example")

#: How long "remember me" keeps a visitor signed in.
REMEMBER = 30 * 24 * 3600
#: Ids older than this are replaced on their next request (the setting).
ROTATE_AFTER = 15 * 60

#: The lists on /lists: each is one session variable (and one memcached key).
LISTS = {"groceries": "Groceries", "chores": "Chores"}
MAX_ITEMS = 30


def store_available(session: Session) -> bool:
    """False when the session store cannot be reached.

    ``session.available`` turns False once one of this request's calls to the
    store failed; the store itself knows a node it has marked down, which also
    covers a request that has not called it yet (a new visitor's page).
    """
    return session.available and session.store.available(session.session_id)


class BaseHandler(SessionHandlerMixin, webapp2.RequestHandler):
    # Read by every page (the header shows it): fetched with the session itself.
    session_prefetch = ("user",)

    def render(self, body: str, title: str = "", script: str = "") -> None:
        self.response.write(
            page(
                body,
                path=self.request.path,
                user=self.get_session_var("user"),
                token=self.csrf_token(),
                flashes=self.get_flashes(),
                store_down=not store_available(self.session),
                dev_secret=bool(self.app.config.get("example", {}).get("dev_secret")),
                title=title,
                script=script,
            )
        )

    def back(self, path: str, message: str, level: str = "success") -> None:
        """Flash ``message`` and send the browser to ``path`` (POST, then redirect, then GET)."""
        self.add_flash(message, level)
        self.redirect(path)


class CounterHandler(BaseHandler):
    """Counts this browser's visits on the server: exact under any concurrency."""

    def get(self) -> None:
        # A new visitor's session is stored just before the increment; taking
        # the token first stores it in that same round trip.
        token = self.csrf_token()
        visits = self.incr_session_var("visits")
        self.render(
            '<div class="card counter">'
            f'<div class="number" aria-hidden="true">{visits}</div><div>'
            f"<h1>Visit number {visits}</h1>"
            '<p class="note">Every load of this page adds one with '
            '<code>incr_session_var("visits")</code>: memcached\'s own <code>incr</code>, '
            "done on the server, so two tabs reloading at once never count the same visit "
            "twice or lose one.</p>"
            + post_button("/reset", "Reset the counter", token, "quiet")
            + "</div></div>"
            '<div class="grid">'
            '<div class="card"><h2>Lists</h2><p class="note">Two lists, two session '
            "variables, two memcached keys. Open them in two tabs and edit both at once: "
            'neither tab undoes the other.</p><a href="/lists">Open the lists →</a></div>'
            '<div class="card"><h2>Your session</h2><p class="note">Every variable, the '
            "memcached key it lives under and how long it has left.</p>"
            '<a href="/session">See your session →</a></div>'
            '<div class="card"><h2>Log in</h2><p class="note">Logging in gives your '
            "session a new id; logging out deletes every key it had.</p>"
            '<a href="/login">Log in →</a></div>'
            "</div>",
            title="Counter",
        )


class ResetHandler(BaseHandler):
    def post(self) -> None:
        self.check_csrf()
        self.delete_session_var("visits")
        self.back("/", "Counter reset.", "info")


class ListsHandler(BaseHandler):
    """Two lists, each kept in its own variable."""

    session_prefetch = ("user", *LISTS)

    def get(self) -> None:
        token = self.csrf_token()
        cards = []
        for name, label in LISTS.items():
            items = self.get_session_var(name) or []
            rows = "".join(
                f"<li><span>{esc(item)}</span>"
                + post_button(
                    f"/lists/{name}",
                    "&times;",
                    token,
                    "quiet",
                    {"action": "remove", "item": str(item)},
                    title=f"Remove {item}",
                )
                + "</li>"
                for item in items
            )
            if not rows:
                rows = '<li class="empty">Nothing yet.</li>'
            clear = post_button(f"/lists/{name}", "Clear", token, "quiet", {"action": "clear"})
            cards.append(
                f'<div class="card" id="{name}"><div class="card-head"><h2>{label} '
                f'<span class="pill">{len(items)}</span></h2>{clear if items else ""}</div>'
                f'<div class="key">variable <code>{name}</code>, key '
                f"<code>&lt;session id&gt;-{name}</code></div>"
                f'<ul class="items">{rows}</ul>'
                f'<form class="row" method="post" action="/lists/{name}">{csrf_field(token)}'
                '<input type="hidden" name="action" value="add">'
                f'<input type="text" name="item" maxlength="80" required '
                f'placeholder="Add to {label.lower()}" aria-label="Add to {label.lower()}">'
                f"<button>Add</button></form></div>"
            )
        self.render(
            "<h1>Lists</h1>"
            '<p class="lead">Each list is one session variable, so one memcached key. Open '
            "this page in two tabs and add to <i>groceries</i> in one and to <i>chores</i> in "
            "the other at the same moment: both additions stay, because neither request "
            "writes the other's key. (A store that writes the whole session back as one blob "
            "keeps only the last.) Within one list, <code>update_session_var</code> adds by "
            "compare-and-set, so two tabs adding to the same list keep both items too.</p>"
            f'<div class="grid">{"".join(cards)}</div>',
            title="Lists",
        )


class ListHandler(BaseHandler):
    """Changes one list: add, remove or clear."""

    def post(self, name: str) -> None:
        if name not in LISTS:
            self.abort(404)
        self.check_csrf()
        form = self.request.POST
        action = form.get("action", "add")
        item = form.get("item", "").strip()[:80]
        try:
            if action == "add":
                if not item:
                    self.back("/lists", "Type something to add.", "warning")
                    return
                # Compare-and-set: an addition another tab made meanwhile is kept.
                self.update_session_var(name, lambda items: [*_as_list(items), item][-MAX_ITEMS:])
            elif action == "remove":
                self.update_session_var(name, lambda items: _without(_as_list(items), item))
            elif action == "clear":
                self.delete_session_var(name)
                self.add_flash(f"{LISTS[name]} cleared.", "info")
            else:
                self.abort(400)
        except UpdateConflictError:
            # Other requests changed this list every time we tried: rare, but say so.
            self.back("/lists", f"{LISTS[name]} was changing too fast; try again.", "warning")
            return
        self.redirect(f"/lists#{name}")


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else []


def _without(items: list[Any], item: str) -> list[Any]:
    """``items`` without the first occurrence of ``item`` (unchanged if absent)."""
    if item in items:
        items.remove(item)
    return items


class SessionPageHandler(BaseHandler):
    """The session's variables and where each one lives in memcached."""

    def get(self) -> None:
        token = self.csrf_token()
        session = self.session
        names = sorted(session)  # one round trip fetches every variable
        rows = []
        for row in session_keys(session, names):
            if row.ttl is None:
                ttl = '<span class="note">not stored yet</span>'
            elif row.ttl < 0:
                ttl = "never expires"
            elif row.estimated:
                ttl = f'{duration(row.ttl)} <span class="note">(the setting)</span>'
            else:
                ttl = f'<span data-ttl="{row.ttl}">{duration(row.ttl)}</span>'
            hashed = '<span class="pill hashed">hashed name</span>' if row.hashed else ""
            # The session's part of the key muted, the variable's own part in bold.
            stem, own = row.key[: row.stem], row.key[row.stem :]
            key = f'<td class="key-cell mono">{esc(stem)}<b>{esc(own)}</b>{hashed}</td>'
            if row.name is None:
                rows.append(
                    '<tr class="record"><td><i>the session record</i></td>'
                    '<td class="note">creation time and the names of the variables</td>'
                    f'{key}<td class="ttl">{ttl}</td><td></td></tr>'
                )
                continue
            value = json.dumps(session.get(row.name), ensure_ascii=False)
            if len(value) > 60:
                value = value[:57] + "…"
            delete = post_button("/session/delete", "Delete", token, "quiet", {"name": row.name})
            rows.append(
                f'<tr><td class="mono">{esc(row.name)}</td><td class="mono">{esc(value)}</td>'
                f'{key}<td class="ttl">{ttl}</td><td>{delete}</td></tr>'
            )
        lost = ""
        if session.lost:
            lost = (
                '<div class="flash warning">Evicted by memcached since they were written: '
                f"{esc(', '.join(sorted(session.lost)))}</div>"
            )
        config = session.config
        remembered = "no (cookie ends with the browser session)"
        if session.expiry:
            remembered = f"for {duration(session.expiry)} (a persistent cookie)"
        id_age = duration(int(time.time() - rotation.issued_at(session)))
        if config.rotate_after:
            id_age += f"; a new id after {duration(config.rotate_after)}"
        self.render(
            "<h1>Your session</h1>"
            '<p class="lead">One memcached key per variable, named '
            "<code>&lt;key_prefix&gt;&lt;session id&gt;-&lt;name&gt;</code>, each with its "
            "own TTL. Reading a variable renews its TTL, so what you just read has the full "
            "lifetime again; a variable nobody reads expires on its own. (A real site would "
            "not show its session id: this page does, to show where things are.)</p>"
            f"{lost}"
            '<div class="card"><table class="keys"><colgroup><col class="c-name">'
            '<col class="c-value"><col class="c-key"><col class="c-ttl"><col class="c-action">'
            "</colgroup><thead><tr><th>Variable</th><th>Value</th>"
            "<th>memcached key</th><th>TTL left</th><th></th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>"
            '<div class="grid">'
            '<div class="card"><h2>Set a variable</h2><p class="note">Any name works. One '
            "outside <code>A-Z a-z 0-9 _ . : -</code> (try a space or an accent) gets a key "
            "ending in <code>~</code> and its SHA-256.</p>"
            f'<form class="stack" method="post" action="/session/set">{csrf_field(token)}'
            '<label>Name <input type="text" name="name" maxlength="100" required></label>'
            '<label>Value <input type="text" name="value" maxlength="200"></label>'
            "<div><button>Set</button></div></form></div>"
            '<div class="card"><h2>Where it lives</h2><dl class="facts">'
            f'<dt>Session id</dt><dd class="mono">{esc(session.session_id)}</dd>'
            f"<dt>Cookie</dt><dd><code>{esc(config.cookie_name)}</code>, HttpOnly, "
            f"<code>SameSite={esc(config.cookie_args.samesite)}</code></dd>"
            f"<dt>Store</dt><dd>{esc(store_name(session))}</dd>"
            f"<dt>TTL setting</dt><dd>{duration(config.ttl)}</dd>"
            f"<dt>Remembered</dt><dd>{remembered}</dd>"
            f"<dt>Id age</dt><dd>{id_age}</dd>"
            f"<dt>Key prefix</dt><dd><code>{esc(config.key_prefix or '(none)')}</code></dd>"
            "</dl></div></div>",
            title="Your session",
            script=TTL_SCRIPT,
        )


class SetVariableHandler(BaseHandler):
    def post(self) -> None:
        self.check_csrf()
        name = self.request.POST.get("name", "")[:100]
        if not name.strip():
            self.back("/session", "A variable needs a name.", "warning")
            return
        self.set_session_var(name, self.request.POST.get("value", "")[:200])
        self.back("/session", f"Set {name}.")


class DeleteVariableHandler(BaseHandler):
    def post(self) -> None:
        self.check_csrf()
        name = self.request.POST.get("name", "")
        if name:
            self.delete_session_var(name)
        self.back("/session", f"Deleted {name}.", "info")


class LoginHandler(BaseHandler):
    def get(self) -> None:
        token = self.csrf_token()
        user = self.get_session_var("user")
        current = (
            f"<p>You are signed in as <b>{esc(user)}</b>; log in again to switch.</p>"
            if user
            else ""
        )
        others = ""
        if user:
            others = (
                '<div class="card" style="max-width:34em" id="devices"><h2>Other devices</h2>'
                '<p class="note">Signed in somewhere else too, another browser or a phone? '
                "This ends every other session of yours, exactly as logging out there "
                "would (<code>destroy_other_sessions()</code>); this one stays.</p>"
                + post_button("/logout/others", "Sign out other devices", token)
                + "</div>"
            )
        self.render(
            '<div class="card" style="max-width:34em">'
            "<h1>Log in</h1>"
            '<p class="note">Any name will do: this demo has no passwords. Logging in calls '
            "<code>regenerate_session_id()</code>: your variables move to a new id and the old "
            "id is deleted, so an id someone planted in your browser before you logged in is "
            "worthless after it.</p>"
            f"{current}"
            f'<p class="note">Your session id now begins with <code>{self.session_id[:8]}</code>.'
            "</p>"
            f'<form class="stack" method="post" action="/login">{csrf_field(token)}'
            '<label>Your name <input type="text" name="user" maxlength="40" '
            'autocomplete="username" required autofocus></label>'
            '<label><input type="checkbox" name="remember" value="1"> Remember me for '
            "30 days</label>"
            "<div><button>Log in</button></div></form></div>" + others,
            title="Log in",
        )

    def post(self) -> None:
        self.check_csrf()
        user = self.request.POST.get("user", "").strip()[:40]
        if not user:
            self.back("/login", "Type a name to log in.", "error")
            return
        before = self.session_id
        # A new id at login: an id planted before login is worthless after it.
        self.regenerate_session_id()
        # Tie the session to the user: "sign out other devices" finds it by that.
        self.set_session_owner(user)
        # Ticked: a persistent cookie, and the session kept 30 days on the server.
        self.set_session_expiry(REMEMBER if self.request.POST.get("remember") else None)
        self.set_session_var("user", user)
        self.back(
            "/",
            f"Welcome, {user}! Your session id changed from {before[:8]}… "
            f"to {self.session_id[:8]}…, with every variable kept.",
        )


class LogoutHandler(BaseHandler):
    def post(self) -> None:
        self.check_csrf()
        # Deletes every key of the session on the server and expires the cookie.
        self.destroy_session()
        self.back("/", "Logged out. Every key of your session was deleted.", "info")


class SignOutOthersHandler(BaseHandler):
    def post(self) -> None:
        self.check_csrf()
        # Every other session tied to this user ends as a logout ends it.
        ended = self.destroy_other_sessions()
        self.back("/login", f"Signed out {ended} other session(s). This one stays.", "info")


class HealthHandler(webapp2.RequestHandler):
    """For load balancers: never touches the session, so it costs no store operation."""

    def get(self) -> None:
        self.response.content_type = "text/plain"
        self.response.write("ok")


ROUTES = [
    ("/", CounterHandler),
    ("/reset", ResetHandler),
    ("/lists", ListsHandler),
    (r"/lists/(\w+)", ListHandler),
    ("/session", SessionPageHandler),
    ("/session/set", SetVariableHandler),
    ("/session/delete", DeleteVariableHandler),
    ("/login", LoginHandler),
    ("/logout", LogoutHandler),
    ("/logout/others", SignOutOthersHandler),
    ("/health", HealthHandler),
]


def _forbidden(request: Any, response: Any, exception: Exception) -> None:
    # check_csrf() refused the request and saved none of its session changes.
    response.set_status(403)
    response.clear()
    response.write(
        error_page(
            403,
            "This form cannot be accepted",
            "It was not sent from a page of this site, or your session ended after the page "
            "was loaded. Go back, reload the page and try again.",
        )
    )


def _not_found(request: Any, response: Any, exception: Exception) -> None:
    response.set_status(404)
    response.clear()
    response.write(error_page(404, "Page not found", "There is no page at this address."))


def settings_from_environment(environ: Mapping[str, str]) -> tuple[dict[str, Any], bool]:
    """The session settings from ``MEMCACHE_SERVERS``, ``SESSION_SECRET`` and
    ``ROTATE_AFTER``/``ROTATE_GRACE``.

    Returns the settings and whether the secret had to be made up.
    """
    settings: dict[str, Any] = {
        "cookie_name": "demo_session",
        "rotate_after": int(environ.get("ROTATE_AFTER", ROTATE_AFTER)),
    }
    if environ.get("ROTATE_GRACE"):
        settings["rotate_grace"] = int(environ["ROTATE_GRACE"])
    servers = [s.strip() for s in environ.get("MEMCACHE_SERVERS", "").split(",") if s.strip()]
    if servers:
        settings["memcache_servers"] = servers
    secret = environ.get("SESSION_SECRET", "").strip()
    made_up = not secret
    if made_up:
        log.warning(
            "\n%s\n  SESSION_SECRET is not set: cookies are signed with a random key made\n"
            "  at start. Every session ends when this process restarts, and processes\n"
            "  do not accept each other's cookies. Set it to a long random string:\n"
            '    python -c "import secrets; print(secrets.token_urlsafe(48))"\n%s',
            "!" * 74,
            "!" * 74,
        )
        secret = secrets.token_urlsafe(32)
    settings["secret_key"] = secret
    return settings, made_up


def make_app(
    settings: dict[str, Any] | None = None, debug: bool = False
) -> webapp2.WSGIApplication:
    """The demo application; ``settings`` replace the environment-derived ones."""
    dev_secret = False
    if settings is None:
        settings, dev_secret = settings_from_environment(os.environ)
    config = {"webapp2_sessions": settings, "example": {"dev_secret": dev_secret}}
    app = webapp2.WSGIApplication(ROUTES, debug=debug, config=config)
    app.error_handlers[403] = _forbidden
    app.error_handlers[404] = _not_found
    return app


class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    """The standard library's WSGI server with one thread per request."""

    daemon_threads = True
    # Room for a burst of connections (the default backlog is 5).
    request_queue_size = 128


def make_server(app: Any, host: str = "127.0.0.1", port: int = 8080) -> ThreadingWSGIServer:
    """A threaded server for ``app``; port 0 picks a free port (see ``server_port``)."""
    server = wsgiref_server(host, port, app, server_class=ThreadingWSGIServer)
    assert isinstance(server, ThreadingWSGIServer)
    return server


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8080"))
    app = make_app()
    with make_server(app, host, port) as server:
        print(f"Serving on http://{host}:{server.server_port}/ (Ctrl-C to stop)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()


if __name__ == "__main__":
    main()
