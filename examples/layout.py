"""The example site's look: one stylesheet, the page shell and small HTML helpers.

Everything is inline (no external assets), so the site works offline and the
pages can be saved as they are. Every value that came from a visitor goes
through ``html.escape`` (``esc``) before it reaches a page.
"""

from __future__ import annotations

import html
from collections.abc import Iterable

TITLE = "webapp2_sessions demo"

STYLE = """
:root {
  --ink: #1f2430; --muted: #5d6475; --line: #e3e6ee; --bg: #f5f6fa; --card: #fff;
  --accent: #4f46e5; --accent-ink: #fff; --code: #f0f1f6;
  --ok: #0f7b4f; --ok-bg: #e7f6ee; --info: #1d5fb8; --info-bg: #e8f0fc;
  --warn: #8a5a00; --warn-bg: #fff4dc; --err: #b3261e; --err-bg: #fdecea;
}
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
  font: 16px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
a { color: var(--accent); }
code, .mono { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace;
  font-size: .86em; }
code { background: var(--code); padding: .1em .35em; border-radius: 4px; }
.banner { padding: .6em 0; font-size: .92em; border-bottom: 1px solid; }
.banner .in { max-width: 980px; margin: 0 auto; padding: 0 1.5em; }
.banner.down { background: var(--err); color: #fff; border-color: #8c1d17; }
.banner.dev { background: var(--warn-bg); color: var(--warn); border-color: #f0d49a; }
.banner strong { margin-right: .4em; }
header { background: #171a23; color: #fff; }
header .bar { max-width: 980px; margin: 0 auto; padding: .7em 1.5em; display: flex;
  align-items: center; gap: 1.5em; flex-wrap: wrap; }
header .brand { font-weight: 700; color: #fff; text-decoration: none; letter-spacing: .01em; }
header .brand span { color: #a5b4fc; font-weight: 500; }
header nav { display: flex; gap: .3em; flex: 1; }
header nav a { color: #c9cdd8; text-decoration: none; padding: .35em .75em; border-radius: 6px; }
header nav a:hover { background: #262a36; color: #fff; }
header nav a.here { background: #2c3140; color: #fff; }
.who { display: flex; align-items: center; gap: .7em; color: #c9cdd8; font-size: .95em; }
.who b { color: #fff; }
.who form { margin: 0; }
.who .button, .who button { padding: .35em .9em; font-size: .9em; }
.who a.button { text-decoration: none; }
main { max-width: 980px; margin: 0 auto; padding: 1.8em 1.5em 3em; }
h1 { font-size: 1.9em; margin: 0 0 .2em; letter-spacing: -.01em; }
h2 { font-size: 1.15em; margin: 0 0 .6em; }
.lead { color: var(--muted); margin: 0 0 1.6em; max-width: 44em; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 12px;
  padding: 1.3em 1.5em; box-shadow: 0 1px 2px rgba(20, 24, 40, .04); margin-bottom: 1.2em; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(280px, 1fr)); gap: 1.2em; }
.grid .card { margin: 0; }
.note { color: var(--muted); font-size: .92em; }
.flashes { margin-bottom: 1.4em; }
.flash { padding: .7em 1em; border-radius: 8px; border-left: 5px solid; margin-bottom: .5em; }
.flash.success { background: var(--ok-bg); border-color: var(--ok); color: var(--ok); }
.flash.info { background: var(--info-bg); border-color: var(--info); color: var(--info); }
.flash.warning { background: var(--warn-bg); border-color: #d69e2e; color: var(--warn); }
.flash.error { background: var(--err-bg); border-color: var(--err); color: var(--err); }
.button, button { font: inherit; cursor: pointer; border: 1px solid var(--accent);
  background: var(--accent); color: var(--accent-ink); padding: .5em 1.1em; border-radius: 8px; }
.button:hover, button:hover { filter: brightness(1.1); }
button.quiet { background: transparent; color: var(--muted); border-color: var(--line); }
button.quiet:hover { color: var(--err); border-color: var(--err); filter: none; }
button.ghost { background: transparent; color: #c9cdd8; border-color: #444b5c; }
input[type=text] { font: inherit; padding: .5em .7em; border: 1px solid #cfd3de;
  border-radius: 8px; min-width: 0; background: #fff; }
input[type=text]:focus { outline: 2px solid #c7c9f9; border-color: var(--accent); }
form.row { display: flex; gap: .5em; margin: .8em 0 0; }
form.row input[type=text] { flex: 1; }
form.stack { display: grid; gap: .8em; max-width: 24em; }
form.stack label { display: grid; gap: .3em; font-weight: 600; font-size: .95em; }
.counter { display: flex; align-items: center; gap: 1.6em; }
.counter .number { font-size: 4.2em; font-weight: 800; color: var(--accent);
  line-height: 1; min-width: 1.4em; text-align: center; font-variant-numeric: tabular-nums; }
.counter h1 { margin: 0 0 .2em; }
ul.items { list-style: none; padding: 0; margin: 0; }
ul.items li { display: flex; align-items: center; justify-content: space-between;
  padding: .45em 0; border-bottom: 1px solid var(--line); }
ul.items li form { margin: 0; }
ul.items li button { padding: .1em .6em; }
.empty { color: var(--muted); font-style: italic; padding: .45em 0; }
.key { color: var(--muted); font-size: .85em; margin: -.3em 0 .8em; }
.card-head { display: flex; align-items: center; justify-content: space-between; gap: 1em; }
.card-head h2 { margin: 0 0 .6em; }
.card-head form { margin: 0 0 .6em; }
.card-head button { padding: .2em .8em; font-size: .85em; }
table { width: 100%; border-collapse: collapse; font-size: .93em; }
th { text-align: left; color: var(--muted); font-weight: 600; font-size: .85em;
  text-transform: uppercase; letter-spacing: .04em; padding: .5em .6em;
  border-bottom: 2px solid var(--line); }
td { padding: .55em .6em; border-bottom: 1px solid var(--line); vertical-align: top; }
table.keys td { overflow-wrap: anywhere; }
td.key-cell { color: var(--muted); }
td button { padding: .2em .7em; font-size: .85em; }
td.key-cell b { color: var(--ink); font-weight: 600; }
col.c-name { width: 15%; } col.c-value { width: 24%; } col.c-key { width: 37%; }
col.c-ttl { width: 13%; } col.c-action { width: 11%; }
table.keys { table-layout: fixed; }
td.ttl { white-space: nowrap; font-variant-numeric: tabular-nums; }
td form { margin: 0; }
tr.record td { background: #fafbfe; }
.pill { display: inline-block; font-size: .78em; padding: .05em .55em; border-radius: 99px;
  background: var(--code); color: var(--muted); margin-left: .4em; vertical-align: 1px; }
.pill.hashed { background: #efeafd; color: #5b3cc4; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .35em 1.2em; margin: 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
dl.facts code { white-space: nowrap; }
footer { color: var(--muted); font-size: .85em; text-align: center; padding: 0 1.5em 2em; }
"""

# Counts the remaining TTLs on the session page down, once a second.
TTL_SCRIPT = """
<script>
(function () {
  var cells = document.querySelectorAll("[data-ttl]");
  function show(cell, s) {
    var h = Math.floor(s / 3600), m = Math.floor(s % 3600 / 60), r = s % 60;
    cell.textContent = (h ? h + " h " : "") + (h || m ? m + " min " : "") + r + " s";
  }
  if (!cells.length) return;
  var start = Date.now();
  setInterval(function () {
    var gone = Math.floor((Date.now() - start) / 1000);
    cells.forEach(function (cell) {
      show(cell, Math.max(0, Number(cell.getAttribute("data-ttl")) - gone));
    });
  }, 1000);
})();
</script>
"""

NAV = (("/", "Counter"), ("/lists", "Lists"), ("/session", "Your session"))
LEVELS = ("success", "info", "warning", "error")


def esc(value: object) -> str:
    """``value`` as text that is safe anywhere in HTML, attributes included."""
    return html.escape(str(value), quote=True)


def csrf_field(token: str) -> str:
    """The hidden field ``check_csrf()`` looks for."""
    return f'<input type="hidden" name="csrf_token" value="{esc(token)}">'


def post_button(
    url: str,
    label: str,
    token: str,
    css: str = "",
    fields: dict[str, str] | None = None,
    title: str = "",
) -> str:
    """A one-button form that POSTs ``fields`` (and the CSRF token) to ``url``."""
    hidden = "".join(
        f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">'
        for k, v in (fields or {}).items()
    )
    attrs = f' class="{css}"' if css else ""
    attrs += f' title="{esc(title)}"' if title else ""
    return (
        f'<form method="post" action="{esc(url)}">{csrf_field(token)}{hidden}'
        f"<button{attrs}>{label}</button></form>"
    )


def flash_list(flashes: Iterable[tuple[object, str | None]]) -> str:
    items = []
    for message, level in flashes:
        css = level if level in LEVELS else "info"
        items.append(f'<div class="flash {css}" role="status">{esc(message)}</div>')
    return f'<div class="flashes">{"".join(items)}</div>' if items else ""


def page(
    body: str,
    *,
    path: str,
    user: str | None,
    token: str,
    flashes: Iterable[tuple[object, str | None]] = (),
    store_down: bool = False,
    dev_secret: bool = False,
    title: str = "",
    script: str = "",
) -> str:
    """A whole page: banners, the header with navigation and login state, flashes, ``body``."""
    banners = ""
    if store_down:
        banners += (
            '<div class="banner down" role="alert"><div class="in">'
            "<strong>Sessions are unavailable.</strong> The session store cannot be reached: "
            "you are seeing an empty session, and what you change now will not be saved. "
            "Try again in a moment.</div></div>"
        )
    if dev_secret:
        banners += (
            '<div class="banner dev"><div class="in"><strong>Development mode.</strong> '
            "<code>SESSION_SECRET</code> is not set, so cookies are signed with a random key "
            "made at start: every session ends when the server restarts.</div></div>"
        )
    links = "".join(
        f'<a href="{href}"{" class=here" if href == path else ""}>{label}</a>'
        for href, label in NAV
    )
    if user:
        who = f"<span>Signed in as <b>{esc(user)}</b></span>" + post_button(
            "/logout", "Log out", token, "ghost"
        )
    else:
        who = '<a class="button" href="/login">Log in</a>'
    full_title = f"{esc(title)} · {TITLE}" if title else TITLE
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # No favicon: spares the browser a request (and a 404) per page.
        '<link rel="icon" href="data:,">'
        f"<title>{full_title}</title><style>{STYLE}</style></head>\n<body>\n"
        f"{banners}<header><div class=bar>"
        f'<a class="brand" href="/">webapp2_sessions <span>demo</span></a>'
        f'<nav>{links}</nav><div class="who">{who}</div></div></header>\n'
        f"<main>{flash_list(flashes)}{body}</main>\n"
        "<footer>Server-side sessions for webapp2, one memcached key per variable.</footer>"
        f"{script}</body></html>\n"
    )


def error_page(status: int, heading: str, text: str) -> str:
    """A page for errors, rendered without touching the session."""
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{status} · {TITLE}</title><style>{STYLE}</style></head>\n<body>\n"
        '<header><div class=bar><a class="brand" href="/">webapp2_sessions <span>demo</span>'
        "</a></div></header>\n"
        f'<main><div class="card"><h1>{esc(heading)}</h1><p class="lead">{esc(text)}</p>'
        '<a class="button" href="/">Back to the site</a></div></main></body></html>\n'
    )


def duration(seconds: int) -> str:
    """``5400`` -> ``1 h 30 min 0 s``; what the TTL script shows too."""
    h, rest = divmod(max(0, seconds), 3600)
    m, s = divmod(rest, 60)
    text = f"{h} h " if h else ""
    text += f"{m} min " if h or m else ""
    return text + f"{s} s"
