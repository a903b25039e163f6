"""What a request that fails, or is refused, does to the session: nothing."""

from __future__ import annotations

from typing import Any

import pytest
import webapp2
import webtest
from conftest import PATIENT, SECRET, capture_errors

from webapp2_sessions import SessionHandlerMixin


class Writes(SessionHandlerMixin, webapp2.RequestHandler):
    """Sets ``a`` to the query's value, then fails the way ``?fail=`` says."""

    def get(self) -> Any:
        self.set_session_var("a", self.request.GET["value"])
        self.add_flash("queued")
        how = self.request.GET.get("fail")
        if how == "raise":
            raise RuntimeError("handler bug")
        if how == "abort":
            self.abort(503)
        if how == "status":
            self.response.set_status(500)
        if how == "returned":
            return webapp2.Response("broken", status=502)
        if how == "handled":
            raise LookupError("answered by handle_exception")
        self.response.write("ok")
        return None

    def handle_exception(self, exception: BaseException, debug: bool) -> None:
        if isinstance(exception, LookupError):
            self.response.set_status(500)
            self.response.write("sorry")
            return
        raise exception


class Reads(SessionHandlerMixin, webapp2.RequestHandler):
    def get(self) -> None:
        flashes = [value for value, _ in self.get_flashes()]
        self.response.write(f"{self.get_session_var('a')!r} {flashes!r}")


def app_on(memcached: Any, **settings: Any) -> webapp2.WSGIApplication:
    config = {"memcache_servers": [memcached.address], "cookie_name": "sid", **PATIENT, **settings}
    return webapp2.WSGIApplication(
        [("/write", Writes), ("/read", Reads)], config={"webapp2_sessions": config}
    )


@pytest.mark.parametrize("how", ["raise", "abort", "status", "returned", "handled"])
def test_a_response_of_500_or_above_saves_nothing_however_it_became_one(memcached, how):
    app = app_on(memcached)
    capture_errors(app, 500, "error page")  # app.error_handlers[500]
    browser = webtest.TestApp(app)
    browser.get("/write", {"value": "kept"})
    assert browser.get("/read").text == "'kept' ['queued']"
    response = browser.get("/write", {"value": "lost", "fail": how}, expect_errors=True)
    assert response.status_int >= 500
    assert browser.get("/read").text == "'kept' []"


def test_a_new_visitor_whose_request_failed_gets_no_session(memcached):
    app = app_on(memcached)
    capture_errors(app, 500)
    response = webtest.TestApp(app).get("/write", {"value": "x", "fail": "status"}, status=500)
    assert "Set-Cookie" not in response.headers
    assert [k for k in memcached.keys() if len(k) >= 32] == []


# --------------------------------------------------------------------------- CSRF


class Form(SessionHandlerMixin, webapp2.RequestHandler):
    def get(self) -> None:
        self.response.write(self.csrf_token())

    def post(self) -> None:
        self.set_session_var("posted", self.request.POST.get("text", ""))
        self.check_csrf()
        self.response.write("accepted")


class Guarded(SessionHandlerMixin, webapp2.RequestHandler):
    def post(self) -> None:
        self.check_csrf()
        self.response.write("accepted")


def form_app(memcached: Any) -> webtest.TestApp:
    config = {"memcache_servers": [memcached.address], "cookie_name": "sid", **PATIENT}
    return webtest.TestApp(
        webapp2.WSGIApplication(
            [("/form", Form), ("/read", Reads), ("/guarded", Guarded)],
            config={"webapp2_sessions": config},
        )
    )


def test_the_csrf_token_is_stable_within_a_session_and_differs_between_sessions(memcached):
    one, two = form_app(memcached), form_app(memcached)
    token = one.get("/form").text
    assert len(token) >= 32 and one.get("/form").text == token
    assert two.get("/form").text != token


@pytest.mark.parametrize("where", ["field", "header"])
def test_a_post_with_the_sessions_token_is_accepted(memcached, where):
    browser = form_app(memcached)
    token = browser.get("/form").text
    if where == "field":
        response = browser.post("/form", {"text": "hi", "csrf_token": token})
    else:
        response = browser.post("/form", {"text": "hi"}, headers={"X-CSRF-Token": token})
    assert response.text == "accepted"


@pytest.mark.parametrize(
    "sent",
    [None, "", "wrong", "é" * 43, "token-of-another-session"],
)
def test_a_post_without_the_sessions_token_is_refused_and_saves_nothing(memcached, sent):
    browser, other = form_app(memcached), form_app(memcached)
    browser.get("/form")
    fields = {"text": "forged"}
    if sent == "token-of-another-session":
        sent = other.get("/form").text
    if sent is not None:
        fields["csrf_token"] = sent
    browser.post("/form", fields, status=403)
    assert memcached.mg(f"{browser.cookies['sid']}-posted") is None


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data",  # no boundary: WebOb cannot parse it
        "application/x-www-form-urlencoded; charset=no-such-charset",
    ],
)
def test_a_post_whose_body_cannot_be_parsed_is_refused_not_a_server_error(memcached, content_type):
    browser = form_app(memcached)
    token = browser.get("/form").text
    body = f"csrf_token={token}".encode()
    browser.post("/guarded", body, headers={"Content-Type": content_type}, status=403)


def test_a_cross_site_post_from_a_visitor_without_a_session_creates_none(memcached):
    response = form_app(memcached).post("/form", {"text": "mallory"}, status=403)
    assert "Set-Cookie" not in response.headers
    assert [k for k in memcached.keys() if len(k) >= 32] == []


# --------------------------------------------------------------------------- neighbours


def test_webapp2_extras_sessions_and_ours_keep_both_sessions_with_default_settings(memcached):
    from webapp2_extras import sessions as extras

    class Both(SessionHandlerMixin, webapp2.RequestHandler):
        def dispatch(self) -> None:
            self.session_store = extras.get_store(request=self.request)
            try:
                super().dispatch()
            finally:
                self.session_store.save_sessions(self.response)

        def get(self) -> None:
            theirs = self.session_store.get_session()
            if "set" in self.request.GET:
                theirs["who"] = "extras"
                self.set_session_var("who", "ours")
            self.response.write(f"{theirs.get('who')} {self.get_session_var('who')}")

    config = {
        "webapp2_extras.sessions": {"secret_key": SECRET},
        "webapp2_sessions": {"memcache_servers": [memcached.address], **PATIENT},
    }
    browser = webtest.TestApp(webapp2.WSGIApplication([("/", Both)], config=config))
    browser.get("/", {"set": "1"})
    assert {"session", "webapp2_sid"} <= set(browser.cookies)
    assert browser.get("/").text == "extras ours"


# --------------------------------------------------------------------------- persistent cookies


class ReadOnly(SessionHandlerMixin, webapp2.RequestHandler):
    def get(self) -> None:
        if "set" in self.request.GET:
            self.set_session_var("a", 1)
        self.response.write(repr(self.get_session_var("a")))


def test_a_persistent_cookie_is_renewed_for_readers_once_per_tenth_of_max_age(memcached):
    config = {
        "memcache_servers": [memcached.address],
        "cookie_name": "sid",
        "cookie_args": {"max_age": 1000},
        **PATIENT,
    }
    app = webapp2.WSGIApplication([("/", ReadOnly)], config={"webapp2_sessions": config})
    browser = webtest.TestApp(app)
    assert "Max-Age=1000" in browser.get("/", {"set": "1"}).headers["Set-Cookie"]
    assert "Set-Cookie" not in browser.get("/").headers  # just sent
    (renewals,) = {id(v.renewals): v.renewals for v in _setups(app)}.values()
    now = renewals._clock()
    renewals._clock = lambda: now + 99
    assert "Set-Cookie" not in browser.get("/").headers
    renewals._clock = lambda: now + 101  # a tenth of max_age has passed
    renewed = browser.get("/")
    assert renewed.text == "1" and "Max-Age=1000" in renewed.headers["Set-Cookie"]
    assert "Set-Cookie" not in browser.get("/").headers
    # A browser-session cookie is never renewed.
    plain = dict(config, cookie_args={})
    other = webtest.TestApp(
        webapp2.WSGIApplication([("/", ReadOnly)], config={"webapp2_sessions": plain})
    )
    other.get("/", {"set": "1"})
    assert "Set-Cookie" not in other.get("/").headers


def _setups(app: webapp2.WSGIApplication) -> list[Any]:
    return [v for v in app.registry.values() if hasattr(v, "renewals")]
