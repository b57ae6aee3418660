"""The web viewer in headless Chromium (Debian's /usr/bin/chromium driven by Playwright; no
browser is downloaded): sign-in against the dev issuer (authorization code + PKCE), a
recorded session played, a command clicked to seek, a live session followed, and recorded
output that looks like HTML shown as text only.  A screenshot of each step goes to
$BASTION_TEST_ARTIFACTS (a temp dir when unset)."""

from __future__ import annotations

import json
import os
import re
import ssl
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from playwright import sync_api as playwright_sync   # the test extra; drives /usr/bin/chromium

from bastion.demo.sshd import free_port, wait_for_port
from tests.e2e.harness import POLICY_RULES, PtyAgent
from tests.e2e.test_api import ApiRig, call

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
REVIEWER = {"name": "Rita Reviewer", "username": "rita@bastion.dev", "roles": ["auditors"]}
RULES = POLICY_RULES.replace('env_allow = ["BASTION_TEST_OK"]',
                             'env_allow = ["BASTION_TEST_OK"]\nreviewers = ["role:auditors"]')
# what the agent prints: HTML, entities and an OSC 8 hyperlink that must stay text
HTML_LINE = "printf '%s\\n' '<script>window.__pwned=1</script>' '</script><img src=x " \
            "onerror=window.__pwned=2>' '&lt;b&gt;bold&amp;co'"
OSC8_LINE = "printf '\\033]8;;javascript:window.__pwned=3\\033\\\\osc8-link\\033]8;;\\033\\\\\\n'"
TIMEOUT_MS = 20_000
PROMPT = b"\x1b[?2004h"                          # the bastion shows its prompt again
LAST_LINE = "echo after-sleep-$((3*3))"
PAD = b"echo TOKEN; printf '%01400d\\n' 0"
TOKENS = ("ready-42", "xss-2-begin", "after-sleep-9")   # output only: not in any typed line



@pytest.fixture(scope="module")
def artifacts() -> Path:
    where = os.environ.get("BASTION_TEST_ARTIFACTS")
    path = Path(where) if where else Path(tempfile.mkdtemp(prefix="bastion-web-"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def web(tmp_path_factory, issuer):
    r = ApiRig(tmp_path_factory.mktemp("web"), issuer).setup()
    r.api_port = free_port()
    client = issuer.clients.by_name("web-viewer") or issuer.add_client("web-viewer", secret=False)
    issuer.authz.register(client.client_id, f"https://127.0.0.1:{r.api_port}/ui/callback")
    text = r.policy_text(RULES).replace(
        f'ca_bundle = "{issuer.ca_path}"\n',
        f'ca_bundle = "{issuer.ca_path}"\nweb_client_id = "{client.client_id}"\n')
    r.write_policy(text)
    r.start()
    wait_for_port(r.api_port, timeout=30, proc=r.proc)
    before = issuer.auto_approve
    issuer.auto_approve = dict(REVIEWER)
    yield r
    issuer.auto_approve = before
    r.close()


@pytest.fixture(scope="module")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: scripts/test.sh installs Debian's chromium")
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def page(browser, web):
    # the API's certificate is self-signed and the issuer's from its own CA; TLS trust is
    # tested in test_api.py, the viewer here
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    pg.errors = []
    pg.on("pageerror", lambda exc: pg.errors.append(str(exc)))
    pg.on("console", lambda msg: pg.errors.append(msg.text)
          if msg.type == "error" else None)
    yield pg
    context.close()


@pytest.fixture(scope="module")
def reviewer(web):
    """A reviewer's bearer token, for the test's own API calls."""
    client = web.issuer.clients.by_name("web-auditor") or \
        web.issuer.add_client("web-auditor", roles=["auditors"])
    return web.issuer.mint(client=client)


@pytest.fixture(scope="module")
def recorded(web, token, reviewer):
    """A finished mediated-shell session with HTML-looking output and a pause between
    commands (so their offsets differ)."""
    agent = PtyAgent(web, token)
    agent.wait_ready()
    agent.read_until(b"$ ")
    for line, shown in (("echo xss-$((1+1))-begin", b"xss-2-begin\r\n"),
                        (HTML_LINE, b"&lt;b&gt;bold&amp;co\r\n"), (OSC8_LINE, b"osc8-link"),
                        ("sleep 1", PROMPT), (LAST_LINE, b"after-sleep-9\r\n")):
        agent.send(line.encode() + b"\r")
        agent.read_until(b"\x1b[?2004l")            # the bastion decided and sent the line
        agent.read_until(shown)
    agent.send(b"exit\r")
    assert agent.wait() == 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        _, body = call(web, "GET", "/api/v1/sessions?limit=5", reviewer)
        done = [s for s in body["sessions"] if s["status"] != "active" and s["n_commands"] >= 5]
        if done:
            return call(web, "GET", f"/api/v1/sessions/{done[0]['id']}", reviewer)[1]
        time.sleep(0.2)
    raise AssertionError("the session never closed in the index")


def shot(page, artifacts: Path, name: str) -> None:
    page.screenshot(path=str(artifacts / f"web-{name}.png"), full_page=True)


def wait_for_text(page, text: str) -> None:
    """Until the player shows ``text`` (a function, not a string: the page's CSP forbids
    the eval Playwright would use for an expression)."""
    page.wait_for_function("t => document.querySelector('#player').innerText.includes(t)",
                           arg=text)


def player_text(page) -> str:
    return page.locator("#player").inner_text()


def test_sign_in_with_the_issuer_sets_a_strict_httponly_cookie(web, page, artifacts, recorded):
    page.goto(web.url + "/ui/")
    page.wait_for_url(re.compile(r".*/ui/?$"))
    page.locator("#sessions tbody tr").first.wait_for()
    shot(page, artifacts, "1-signed-in-sessions")
    assert page.locator("#whoami").inner_text() == REVIEWER["name"]
    assert page.locator(f'#sessions tbody tr[data-session="{recorded["id"]}"]').count() == 1
    cookies = {c["name"]: c for c in page.context.cookies()}
    ui = cookies["bastion_ui"]
    assert (ui["httpOnly"], ui["secure"], ui["sameSite"], ui["path"]) == \
        (True, True, "Strict", "/ui")
    assert "bastion_ui" not in page.evaluate("document.cookie")      # no token or cookie in JS
    assert "eyJ" not in page.content()                                # no JWT in the page
    log = web.wait_log("web sign-in by")                              # an audit event...
    assert "eyJ" not in log and ui["value"] not in log                # ...without token or cookie


def test_a_recorded_session_plays_and_html_in_it_stays_text(web, page, artifacts, recorded):
    page.goto(f"{web.url}/ui/session?id={recorded['id']}")
    page.locator("#commands tbody tr").nth(4).wait_for()
    page.locator(".ap-player").wait_for()
    page.evaluate("window.bastionViewer.player.play()")
    wait_for_text(page, "after-sleep-9")
    shot(page, artifacts, "2-recording-played")
    text = player_text(page)
    for literal in ("<script>window.__pwned=1</script>", "</script><img src=x",
                    "&lt;b&gt;bold&amp;co", "osc8-link"):
        assert literal in text, (literal, text)
    # the OSC 8 link shows its text alone, its target neither shown nor a link
    assert "osc8-link" in [line.strip() for line in text.splitlines()]
    lines = page.locator("#commands td.line").all_inner_texts()
    assert HTML_LINE in lines and OSC8_LINE in lines                  # the timeline, as text
    assert page.evaluate("window.__pwned") is None                    # no recorded script ran
    assert page.locator("#player img, #commands img, #player a, a[href^='javascript']").count() == 0
    assert page.locator("script").count() == 2                        # the player and app.js
    assert not [e for e in page.errors if "Content Security Policy" in e], page.errors


def _output_until(web, reviewer, recorded, t: float) -> str:
    """The recorded output of the session's channel up to ``t`` s (as the API serves it)."""
    channel = recorded["channels"][0]["id"]
    status, raw = call(web, "GET", f"/api/v1/sessions/{recorded['id']}/channels/{channel}"
                                   "/recording", reviewer)
    assert status == 200
    events = [json.loads(line) for line in raw.splitlines()[1:] if line.strip()]
    return "".join(e[2] for e in events if e[1] in ("o", "e") and e[0] <= t)


def test_clicking_a_command_seeks_the_player_to_its_offset(web, page, artifacts, recorded,
                                                          reviewer):
    page.goto(f"{web.url}/ui/session?id={recorded['id']}")
    # What the terminal must show at a command's offset: the output recorded up to there,
    # not after.  Recorded output can trail the decisions (the masker keeps a tail until
    # more output decides it), so pick a command with some but not all of the output
    # before it, else the last one.
    seen = [(c, {t for t in TOKENS if t in _output_until(web, reviewer, recorded, c["offset"])})
            for c in recorded["commands"] if c["offset"] is not None]
    middle = [(c, shown) for c, shown in seen if 0 < len(shown) < len(TOKENS)]
    command, shown = (middle or seen)[-1]
    row = page.locator(f'#commands tbody tr[data-command="{command["id"]}"]')
    page.locator(".ap-player").wait_for()
    row.click()
    at = None
    for _ in range(100):                # getCurrentTime() is a promise in the 3.x player
        at = page.evaluate("window.bastionViewer.player.getCurrentTime()")
        if abs(at - command["offset"]) < 0.05:
            break
        page.wait_for_timeout(100)
    for token in sorted(shown):
        wait_for_text(page, token)
    shot(page, artifacts, "3-seeked-to-command")
    assert at is not None and abs(at - command["offset"]) < 0.05, (at, command["offset"])
    text = player_text(page)
    assert {t for t in TOKENS if t in text} == shown, text            # nothing from later
    assert page.evaluate("window.bastionViewer.player.getCurrentTime()") == at   # paused there
    assert page.evaluate("window.__pwned") is None


def test_a_command_search_finds_the_html_line_as_text_and_links_its_session(web, page,
                                                                            artifacts, recorded):
    page.goto(f"{web.url}/ui/")
    page.locator("#search input[name=q]").fill("pwned script")
    page.locator("#search button").click()
    page.locator("#commands tbody tr").first.wait_for()
    shot(page, artifacts, "5-command-search")
    lines = page.locator("#commands td.line").all_inner_texts()
    assert lines == [HTML_LINE]                                        # the words, as text
    assert page.evaluate("window.__pwned") is None
    page.locator("#commands tbody a").first.click()
    page.wait_for_url(re.compile(rf".*/ui/session\?id={recorded['id']}$"))


def test_a_live_session_receives_new_output(web, page, artifacts, token, reviewer):
    agent = PtyAgent(web, token, cols=200, rows=50)
    try:
        agent.wait_ready()
        agent.read_until(b"$ ")
        # each command prints 1.4 KiB (7 rows) after its token: the recording's masker holds
        # back up to 1 KiB of output until more comes (or the channel ends), and the live
        # view shows what the recording holds
        agent.send(PAD.replace(b"TOKEN", b"live-one") + b"\r")
        agent.read_until(b"0" * 1400)
        _, body = call(web, "GET", "/api/v1/sessions?status=active&limit=5", reviewer)
        sid = next(s["id"] for s in body["sessions"] if s["n_commands"])
        page.goto(f"{web.url}/ui/session?id={sid}")
        page.locator("#mode.live").wait_for()
        wait_for_text(page, "live-one")
        agent.send(PAD.replace(b"TOKEN", b"live-two-$((40+2))") + b"\r")
        wait_for_text(page, "live-two-42")
        # the timeline follows the running channel: the new command shows with its decision
        row = page.locator("#commands tbody tr", has_text="live-two-$((40+2))")
        row.wait_for()
        assert "allow" in row.inner_text() and "read-only-tools" in row.inner_text()
        shot(page, artifacts, "4-live")
        # a command of the running channel: its recording so far, at that offset
        _, session = call(web, "GET", f"/api/v1/sessions/{sid}", reviewer)
        first = session["commands"][0]
        page.locator(f'#commands tbody tr[data-command="{first["id"]}"]').click()
        page.locator("#mode", has_text="so far").wait_for()
        at = None
        for _ in range(100):
            at = page.evaluate("window.bastionViewer.player.getCurrentTime()")
            if abs(at - first["offset"]) < 0.05:
                break
            page.wait_for_timeout(100)
        assert abs(at - first["offset"]) < 0.05, (at, first["offset"])
        agent.send(b"exit\r")
        assert agent.wait() == 0
    finally:
        agent.close()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def _get(web, path: str, headers: dict | None = None, method: str = "GET"):
    """(status, body, headers) of one request; redirects are not followed."""
    ctx = ssl.create_default_context(cafile=str(web.cert))
    opener = urllib.request.build_opener(_NoRedirect(), urllib.request.HTTPSHandler(context=ctx))
    req = urllib.request.Request(web.url + path, headers=headers or {}, method=method)
    try:
        with opener.open(req, timeout=30) as resp:
            return resp.status, resp.read(), {k.lower(): v for k, v in resp.headers.items()}
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), {k.lower(): v for k, v in exc.headers.items()}


def test_the_viewer_is_read_only_and_its_data_needs_a_signed_in_browser(web, page, recorded):
    cookie = next(c for c in page.context.cookies() if c["name"] == "bastion_ui")["value"]
    status, body, headers = _get(web, "/ui/data/sessions")
    assert status == 401 and json.loads(body)["error"] == "not signed in"
    assert _get(web, "/ui/data/sessions", {"Cookie": "bastion_ui=forged"})[0] == 401
    status, body, headers = _get(web, "/ui/data/sessions", {"Cookie": f"bastion_ui={cookie}"})
    assert status == 200 and json.loads(body)["sessions"]
    assert "'unsafe-inline'" not in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert _get(web, "/ui/data/sessions", {"Cookie": f"bastion_ui={cookie}",
                                           "Sec-Fetch-Site": "cross-site"})[0] == 403
    assert _get(web, "/ui/logout", {"Cookie": f"bastion_ui={cookie}"}, method="POST")[0] == 405
    status, _, headers = _get(web, "/ui/")
    assert status == 302 and headers["location"] == "/ui/login"       # to the sign-in
    status, _, headers = _get(web, "/ui/login", {"Host": f"127.0.0.1:{web.api_port}"})
    assert status == 302 and headers["location"].startswith(web.issuer.authority)
    assert "code_challenge_method=S256" in headers["location"]
    assert "SameSite=Lax" in headers["set-cookie"] and "HttpOnly" in headers["set-cookie"]
    status, _, headers = _get(web, "/ui/static/asciinema-player.min.js")
    assert status == 200 and headers["content-type"].startswith("text/javascript")
    assert _get(web, "/ui/static/../app.py")[0] == 404
    # the recording is served as data, never as a page
    channel = recorded["channels"][0]["id"]
    status, body, headers = _get(web, f"/ui/data/sessions/{recorded['id']}/channels/{channel}"
                                      "/recording", {"Cookie": f"bastion_ui={cookie}"})
    assert status == 200 and b"<script>window.__pwned=1</script>" in body
    assert headers["content-type"] == "application/x-asciicast"
    assert headers["x-content-type-options"] == "nosniff"
    assert "script-src 'self' 'wasm-unsafe-eval'" in headers["content-security-policy"]
    # signed out: the cookie opens nothing any more
    assert _get(web, "/ui/logout", {"Cookie": f"bastion_ui={cookie}"})[0] == 200
    assert _get(web, "/ui/data/sessions", {"Cookie": f"bastion_ui={cookie}"})[0] == 401
