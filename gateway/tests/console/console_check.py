#!/usr/bin/env python3
"""Browser test of the operator console (served by the admin listener at /console) in headless Chromium.

    console_check.py --admin http://127.0.0.1:8003 --http http://127.0.0.1:8000 --token T --shots DIR \
        --loadtest target/release/loadtest

Expects a gateway with the bundled models (breast-cancer 1-3, breast-cancer-fp16, diabetes, digits, wine) and a short
rollout policy that checks label disagreement on mirrored pairs, as config/demo.toml's (or pass --policy): version 3
fails only that check. Checks, each printed as one PASS/FAIL line:
  load     the page asks for the token, keeps it for the tab, and shows every model and version; forgetting the
           token and then a wrong one shows the refusal and no model data; the token is in no URL or cookie
  csp      the page is served with the strict Content-Security-Policy and the browser reported no violation
  rollout  a rollout of the bad breast-cancer version 3, started from the page under load, is followed live (no
           reload): the steps, the failing check's dots beyond its threshold, the failed intervals, the rollback
  actions  canary, weight, shadow, promote and clear-shadow from the page change the routing as the admin API and
           the journal then say; a refused action shows the server's own message
  xss      a rollback reason `<img src=x onerror=alert(1)>` shows as text: no alert, no such <img>
  views    fleet, traffic (charts or "no traffic history") and skew (the wine model's categorical `color` drift)
  shots    screenshots of the main views in --shots
Exits non-zero on any failure; the last line is "console: ok" when every check passed.
"""

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import (
    NoAlertPresentException,
    StaleElementReferenceException,
    TimeoutException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

REPO = Path(__file__).resolve().parents[3]
MODELS = {"breast-cancer", "breast-cancer-fp16", "diabetes", "digits", "wine"}
XSS = "<img src=x onerror=alert(1)>"
CSP_DIRECTIVES = {
    "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:", "connect-src 'self'",
    "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'",
}
ACTIVE = {"progressing", "paused", "awaiting_approval"}


class Check(Exception):
    pass


def args_():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--admin", required=True, help="admin listener base URL (serves /console and /admin)")
    p.add_argument("--http", required=True, help="inference HTTP base URL, for the load tester")
    p.add_argument("--token", required=True, help="admin bearer token")
    p.add_argument("--shots", required=True, type=Path, help="directory for the PNG screenshots")
    p.add_argument("--loadtest", required=True, help="the load tester binary")
    p.add_argument("--rows-file", default=str(REPO / "loadtest/data/breast-cancer-test.jsonl"))
    p.add_argument("--policy", default="", help="policy overrides (JSON) typed into the page's rollout form")
    p.add_argument("--rollout-timeout", type=float, default=90.0, help="seconds to wait for the rollback")
    p.add_argument("--rate", type=int, default=200, help="requests/s the load tester sends during the rollout")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    return p.parse_args()


class Admin:
    """The admin API over urllib, to set the scene and to check what the page did."""

    def __init__(self, base, token):
        self.base, self.token = base.rstrip("/"), token

    def call(self, method, path, body=None, token=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {token or self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                text = r.read().decode()
                return r.status, (json.loads(text) if text else None)
        except urllib.error.HTTPError as e:
            text = e.read().decode()
            try:
                return e.code, json.loads(text)
            except ValueError:
                return e.code, text

    def get(self, path):
        status, body = self.call("GET", path)
        if status != 200:
            raise Check(f"GET {path}: {status} {body}")
        return body

    def model(self, m="breast-cancer"):
        return self.get(f"/admin/models/{m}")

    def events(self, m="breast-cancer"):
        return self.get(f"/admin/models/{m}/events")

    def rollout(self, m="breast-cancer"):
        return self.get(f"/admin/models/{m}/rollout")

    def reset(self, m="breast-cancer", stable="2"):
        """No active rollout, no canary, no shadow, `stable` stable: the same start whatever ran before."""
        r = self.rollout(m)
        if r and r.get("phase") in ACTIVE:
            self.call("POST", f"/admin/models/{m}/rollout/abort", {"reason": "console check: reset"})
        view = self.model(m)
        if view.get("canary"):
            self.call("POST", f"/admin/models/{m}/rollback", {"reason": "console check: reset"})
        if view.get("shadow"):
            self.call("DELETE", f"/admin/models/{m}/shadow")
        if self.model(m).get("stable") != stable:
            status, body = self.call("PUT", f"/admin/models/{m}/stable", {"version": stable, "reason": "console check: reset"})
            if status != 200:
                raise Check(f"cannot make version {stable} stable: {status} {body}")


class Console:
    def __init__(self, a, shots):
        self.a, self.shots = a, shots
        o = webdriver.ChromeOptions()
        o.binary_location = a.chromium
        for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1400,1000", "--disable-extensions", "--no-first-run"):
            o.add_argument(flag)
        o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.d = webdriver.Chrome(service=Service(a.chromedriver), options=o)
        self.d.set_page_load_timeout(30)
        self.logs = []
        self.url = a.admin.rstrip("/") + "/console"

    # --- waiting and reading

    def wait(self, cond, timeout, what):
        """Waits until cond() is truthy (explicit, bounded), returning its value; a timeout fails the check."""
        try:
            return WebDriverWait(self.d, timeout, poll_frequency=0.2).until(lambda _d: cond())
        except TimeoutException:
            raise Check(f"timed out after {timeout:g} s waiting for {what}") from None

    def js(self, script, *args):
        return self.d.execute_script(script, *args)

    def text(self, css):
        """The rendered text of the first element `css` names (read in the page: never a stale reference)."""
        return self.js("const e = document.querySelector(arguments[0]); return e ? e.innerText : ''", css)

    def click(self, css, timeout=10):
        """Clicks the element `css` names; the page re-renders parts of itself every poll, so an element found a
        moment ago may have been replaced: find it again until the click lands."""

        def attempt():
            try:
                found = self.d.find_elements(By.CSS_SELECTOR, css)
                if not found:
                    return False
                found[0].click()
                return True
            except StaleElementReferenceException:
                return False

        self.wait(attempt, timeout, f"a click on {css}")

    def visible(self, id_):
        found = self.d.find_elements(By.ID, id_)
        return bool(found) and found[0].is_displayed()

    def collect_logs(self):
        try:
            self.logs.extend(self.d.get_log("browser"))
        except WebDriverException:
            pass
        return self.logs

    # --- the page

    def login(self, token):
        self.wait(lambda: self.visible("token-input"), 15, "the token prompt")
        field = self.d.find_element(By.ID, "token-input")
        field.clear()
        field.send_keys(token)
        self.d.find_element(By.CSS_SELECTOR, "#login-form button[type=submit]").click()

    def select_model(self, m):
        self.click(f'.model-card[data-model="{m}"]', 15)
        self.wait(lambda: self.text("#model-name") == m and self.d.find_elements(By.CSS_SELECTOR, "#versions-table"),
                  15, f"{m}'s versions")
        # The action forms fill their version pickers from the model's own view.
        self.wait(lambda: Select(self.d.find_element(By.ID, "canary-version")).options, 10, "the version pickers")

    def act(self, button, fill=None, expect_done=True, on_dialog=None):
        """Fills the inputs, clicks an action, confirms in the page's own dialog, waits for the outcome line."""
        for id_, value in (fill or {}).items():
            el = self.d.find_element(By.ID, id_)
            if el.tag_name == "select":
                self.wait(lambda: value in [o.get_attribute("value") for o in Select(el).options], 10,
                          f"version {value} in #{id_}")
                Select(el).select_by_value(value)
            else:
                el.clear()
                el.send_keys(value)
        self.js("document.getElementById('action-status').textContent = ''")
        self.d.find_element(By.ID, button).click()
        self.wait(lambda: self.d.find_element(By.ID, "confirm-dialog").get_attribute("open") is not None, 5,
                  "the confirmation dialog")
        if on_dialog:
            on_dialog()
        self.d.find_element(By.ID, "confirm-ok").click()
        status = self.wait(lambda: self.text("#action-status"), 15, f"the outcome of {button}")
        if expect_done and not status.endswith("done."):
            raise Check(f"{button}: {status}")
        return status

    def shot(self, name, css=None):
        """A screenshot of the whole page, or of one element, grown to the page's height so nothing is cut."""
        self.js("window.scrollTo(0, 0)")
        height = self.js("return Math.max(document.body.scrollHeight, 1000)")
        self.d.set_window_size(1400, min(int(height) + 120, 8000))
        path = self.shots / f"{name}.png"
        if css:
            self.d.find_element(By.CSS_SELECTOR, css).screenshot(str(path))
        else:
            self.d.save_screenshot(str(path))
        self.d.set_window_size(1400, 1000)
        return path


# ------------------------------------------------------------------------------------------------- the checks

def check_load(c, admin, a):
    d = c.d
    d.get(c.url)
    c.wait(lambda: c.visible("login"), 15, "the token prompt on a fresh tab")
    c.login(a.token)
    api_models = {m["name"]: [v["version"] for v in m["versions"]] for m in admin.get("/admin/models")}
    if not MODELS <= set(api_models):
        raise Check(f"the gateway lacks bundled models: it has {sorted(api_models)}")

    def all_shown():
        for m, versions in api_models.items():
            for v in versions:
                if not d.find_elements(By.CSS_SELECTOR, f'.model-card[data-model="{m}"] [data-version="{v}"]'):
                    return False
        return True

    c.wait(all_shown, 20, "every model and version on the page")
    if c.js("return sessionStorage.length") < 1:
        raise Check("the token is not kept in sessionStorage")
    # Asked once: a reload keeps the tab's token and shows the data without asking again.
    d.refresh()
    c.wait(lambda: d.find_elements(By.CSS_SELECTOR, '.model-card[data-model="wine"]'), 20, "the models after a reload")
    if c.visible("login"):
        raise Check("a reload asked for the token again")
    if a.token in d.current_url or d.get_cookies():
        raise Check(f"the token leaks into the URL or a cookie: {d.current_url} {d.get_cookies()}")

    # Forget the token, then a wrong one: the refusal, and no model data anywhere in the document.
    d.find_element(By.ID, "forget").click()
    c.wait(lambda: c.visible("login"), 5, "the prompt after forgetting the token")
    if c.js("return sessionStorage.getItem('gateway-console-token')") is not None:
        raise Check("forgetting the token left it in sessionStorage")
    c.login(a.token + "-wrong")
    c.wait(lambda: c.visible("refused"), 15, "the refusal of a wrong token")
    refusal = c.text("#refused")
    status, body = admin.call("GET", "/admin/models", token=a.token + "-wrong")
    if status != 401 or body["error"] not in refusal:
        raise Check(f"the refusal does not show the server's message: {refusal!r} vs {status} {body}")
    # Nothing may come back over more than two poll periods.
    try:
        WebDriverWait(d, 2.5, 0.25).until(lambda _d: any(m in _d.page_source for m in MODELS))
        raise Check("model data is on the page with a wrong token")
    except TimeoutException:
        pass
    if c.visible("app"):
        raise Check("the console stays visible with a wrong token")
    c.shot("refused")
    c.login(a.token)
    c.wait(lambda: d.find_elements(By.CSS_SELECTOR, '.model-card[data-model="breast-cancer"]'), 20,
           "the models with the right token again")
    c.shot("models", "#models")
    shown = sum(len(v) for v in api_models.values())
    return f"{len(api_models)} models, {shown} versions shown; refusal: {refusal!r}"


def check_csp(c, admin, a):
    problems = []
    for path in ("/console", "/console/console.js", "/console/console.css"):
        with urllib.request.urlopen(admin.base + path, timeout=10) as r:  # no token: they hold no data
            csp = r.headers.get("Content-Security-Policy", "")
        got = {x.strip() for x in csp.split(";") if x.strip()}
        if not CSP_DIRECTIVES <= got:
            problems.append(f"{path}: CSP {csp!r} lacks {sorted(CSP_DIRECTIVES - got)}")
    bad = [e for e in c.collect_logs()
           if "Content Security Policy" in e.get("message", "") or "Uncaught" in e.get("message", "")]
    problems += [f"browser: {e['message']}" for e in bad]
    if problems:
        raise Check("; ".join(problems))
    return f"CSP on all 3 files; {len(c.logs)} browser log lines, no CSP violation or uncaught error"


# Records, in the page, every distinct state of the rollout view the polling produced: the DOM changing over time
# is the evidence that the console follows the rollout live.
OBSERVER = """
window.__consoleMarker = arguments[0];
window.__states = [];
const snap = () => {
  const phase = document.getElementById('rollout-phase');
  const tl = document.getElementById('rollout-timeline');
  const s = {
    phase: phase ? phase.dataset.phase : null,
    started: phase ? phase.dataset.started : null,
    points: tl ? Number(tl.dataset.points) : 0,
    weight: tl ? Number(tl.dataset.weight) : null,
    fails: document.querySelectorAll('svg.check-chart circle.fail').length,
    t: Date.now(),
  };
  const last = window.__states[window.__states.length - 1];
  if (!last || last.phase !== s.phase || last.started !== s.started || last.points !== s.points || last.fails !== s.fails || last.weight !== s.weight) {
    window.__states.push(s);
  }
};
snap();
new MutationObserver(snap).observe(document.getElementById('rollout-body'), {subtree: true, childList: true, attributes: true});
"""


def check_rollout(c, admin, a, tmp):
    d = c.d
    admin.reset()
    c.select_model("breast-cancer")
    marker = f"m{random.randrange(1 << 30)}"
    c.js(OBSERVER, marker)
    polls_before = int(c.js("return Number(document.getElementById('poll-status').dataset.polls || 0)"))
    load = subprocess.Popen(
        [a.loadtest, "run", "--url", a.http, "--model", "breast-cancer", "--rate", str(a.rate),
         "--duration", str(int(a.rollout_timeout + 20)), "--warmup", "0", "--rows-file", a.rows_file,
         "--quiet", "--scenario", "console-check", "--out", str(tmp)],
        stdout=subprocess.DEVNULL, stderr=open(tmp / "loadtest.log", "wb"))
    try:
        fill = {"rollout-version": "3"}
        if a.policy:
            fill["rollout-policy"] = a.policy

        def dialog_states_request():
            req = c.text("#confirm-request")
            if "POST /admin/models/breast-cancer/rollout" not in req or '"version": "3"' not in req:
                raise Check(f"the confirmation does not state the request: {req!r}")
            c.shot("confirm", "#confirm-dialog")

        c.act("act-rollout-start", fill, on_dialog=dialog_states_request)
        started = admin.rollout()
        if not started or started["canary"] != 3:
            raise Check(f"the page did not start the rollout: {started}")
        policy = started["policy"]
        # Version 3 answers fast and without errors; only its labels are wrong. A policy without a check on them
        # would promote it: say so now rather than after the timeout.
        checks = policy["checks"]
        if checks.get("max_label_disagreement") is None and checks.get("max_accuracy_drop") is None:
            raise Check("the gateway's rollout policy has no check that catches version 3: set "
                        "checks.max_label_disagreement (and mirror_percent, min_pairs) as config/demo.toml does, "
                        "or pass --policy")
        # The shortest a rollout to rollback can take; below a couple of poll periods the page may only ever show
        # it ended, so "progressing" is required only for rollouts that last longer.
        period = policy["interval_secs"] * policy["threshold"]
        this = "s => s.started === arguments[0] && s.phase === arguments[1]"

        # Live: while it runs the page shows it progressing, then rolled back, without a reload.
        if period >= 2.5:
            c.wait(lambda: c.js(f"return window.__states.some({this})", started["started_at"], "progressing"), 15,
                   "the page to show the rollout progressing")
            c.shot("rollout-progressing", "#rollout")
        ended = "s => s.started === arguments[0] && ['rolled_back', 'promoted', 'aborted'].includes(s.phase)"
        end = c.wait(lambda: c.js(f"return window.__states.find({ended})", started["started_at"]),
                     a.rollout_timeout, "the page to show the rollout rolled back")
        if end["phase"] != "rolled_back":
            raise Check(f"the rollout of version 3 ended {end['phase']}, not rolled_back")
        all_states = c.js("return window.__states")
        states = [s for s in all_states if s["started"] == started["started_at"]]
        final = admin.rollout()
        if final["phase"] != "rolled_back":
            raise Check(f"the API says the rollout is {final['phase']}, not rolled_back")
        if c.js("return window.__consoleMarker") != marker:
            raise Check("the page was reloaded: the console must update in place")
        phases = [s["phase"] for s in states]
        if period >= 2.5 and phases.index("progressing") > phases.index("rolled_back"):
            raise Check(f"phases shown out of order: {phases}")
        if len(all_states) < 2 or (period >= 2.5 and len(states) < 2):
            raise Check(f"the rollout view did not change over time: {all_states}")

        # The failing check: its dots beyond the threshold, as the API's last analysis measured it.
        failing = [ch for ch in final["last_analysis"]["checks"] if ch["status"] == "fail"]
        if not failing:
            raise Check(f"the last analysis has no failing check: {final['last_analysis']}")
        name = failing[0]["check"]
        dots = d.find_elements(By.CSS_SELECTOR, f'svg.check-chart[data-check="{name}"] circle[data-status="fail"]')
        if not dots:
            raise Check(f"no failing dot in the {name} chart")
        lower_is_bad = name == "success_rate"
        for dot in dots:
            value, threshold = float(dot.get_attribute("data-value")), float(dot.get_attribute("data-threshold"))
            if (value >= threshold) if lower_is_bad else (value <= threshold):
                raise Check(f"{name} dot {value} does not cross its threshold {threshold}")
        if d.find_elements(By.CSS_SELECTOR, f'svg.check-chart[data-check="{name}"] line.threshold') == []:
            raise Check(f"the {name} chart draws no threshold")
        # The steps: the timeline ends at 0 % (the canary left the routing) after every journaled decision.
        timeline = d.find_element(By.ID, "rollout-timeline")
        if float(timeline.get_attribute("data-weight")) != 0 or int(timeline.get_attribute("data-points")) < 2:
            raise Check(f"timeline: weight {timeline.get_attribute('data-weight')}, "
                        f"{timeline.get_attribute('data-points')} entries")
        guides = len(d.find_elements(By.CSS_SELECTOR, "#rollout-timeline line.guide"))
        if guides != len(final["steps_percent"]):
            raise Check(f"{guides} step guides for steps {final['steps_percent']}")
        failures = d.find_elements(By.CSS_SELECTOR, "#rollout-failures li")
        if len(failures) != final["failed_intervals"]:
            raise Check(f"{len(failures)} failed intervals shown, the API says {final['failed_intervals']}")
        row = d.find_elements(By.CSS_SELECTOR, f'#rollout-analysis tr[data-check="{name}"][data-status="fail"]')
        if not row:
            raise Check(f"the last analysis table does not show {name} failing")
        if final["message"] not in c.text("#rollout-message"):
            raise Check("the rollout's message is not shown")
        # The journal: the rollback entry expands to its measured values.
        c.wait(lambda: d.find_elements(By.CSS_SELECTOR, '#journal-list li[data-kind="rolled_back"] details'), 10,
               "the rollback in the journal")
        c.click('#journal-list li[data-kind="rolled_back"] details summary')
        value = f"{failing[0]['value']:.3f}".rstrip("0").rstrip(".")
        # The page keeps an opened entry open across its re-renders.
        c.wait(lambda: (lambda t: name in t and value in t)(
            c.text('#journal-list li[data-kind="rolled_back"] details[open]')), 5,
            f"the rollback entry to show {name} = {value} when expanded")
        polls = int(c.js("return Number(document.getElementById('poll-status').dataset.polls || 0)"))
        if polls <= polls_before:
            raise Check("the page did not poll")
        c.shot("rollout", "#rollout")
        c.shot("journal", "#journal")
        seen = " -> ".join(f"{s['phase']}/{s['points']}e/{s['fails']}f" for s in states)
        return (f"rolled back on {name} ({failing[0]['value']:.1f} against {failing[0]['threshold']:g}) "
                f"after {final['analyses']} analyses; the view went {seen} over {polls - polls_before} polls")
    finally:
        load.terminate()
        try:
            load.wait(10)
        except subprocess.TimeoutExpired:
            load.kill()


def last_event(admin, kind, since):
    """The newest journal entry of `kind` after the `since` first entries, or None."""
    evs = admin.events()[since:]
    found = [e for e in evs if e["kind"] == kind]
    return found[-1] if found else None


def check_actions(c, admin, a):
    d = c.d
    admin.reset()
    c.select_model("breast-cancer")
    done = []

    def journal_count():
        return len(admin.events())

    def expect(kind, since, what, pred):
        """The API's view satisfies `pred`, the journal has a `kind` entry, and the page shows that entry."""
        view = c.wait(lambda: (lambda v: v if pred(v) else None)(admin.model()), 10, what)
        ev = c.wait(lambda: last_event(admin, kind, since), 10, f"a {kind} journal entry")
        c.wait(lambda: d.find_elements(By.CSS_SELECTOR, f'#journal-list li[data-kind="{kind}"]'), 10,
               f"{kind} in the page's journal")
        done.append(kind)
        return view, ev

    n = journal_count()
    c.act("act-canary", {"canary-version": "1", "canary-weight": "20"})
    view, ev = expect("canary_started", n, "canary 1 at 20 %",
                      lambda v: v["canary"] and v["canary"]["version"] == "1" and v["canary"]["weight_percent"] == 20)
    if ev["canary"] != 1 or ev["weight_percent"] != 20:
        raise Check(f"the journal disagrees: {ev}")
    c.wait(lambda: "canary 1 · 20 %" in c.text("#routing-text"), 10, "the page's routing to say canary 1 · 20 %")

    n = journal_count()
    c.act("act-weight", {"canary-weight": "30"})
    expect("weight_changed", n, "the canary at 30 %", lambda v: v["canary"] and v["canary"]["weight_percent"] == 30)

    n = journal_count()
    c.act("act-shadow", {"shadow-version": "3", "shadow-percent": "10"})
    expect("shadow_started", n, "shadow 3 at 10 %",
           lambda v: v["shadow"] and v["shadow"]["version"] == "3" and v["shadow"]["percent"] == 10)
    c.wait(lambda: "shadow 3 · 10 % copied" in c.text("#routing-text"), 10, "the page's routing to show the shadow")

    # A refused action shows the server's own message (there is no rollout to pause).
    status, body = admin.call("POST", "/admin/models/breast-cancer/rollout/pause", {})
    shown = c.act("act-rollout-pause", expect_done=False)
    if status < 400 or body["error"] not in shown or str(status) not in shown:
        raise Check(f"the refusal shows {shown!r}; the server says {status} {body}")

    n = journal_count()
    c.act("act-promote", {"promote-note": "promoted from the console check"})
    _, ev = expect("promoted", n, "version 1 stable, no canary", lambda v: v["stable"] == "1" and v["canary"] is None)
    if "promoted from the console check" not in ev["message"]:
        raise Check(f"the promotion note is not in the journal: {ev['message']!r}")
    c.wait(lambda: "stable 1 · 100 %" in c.text("#routing-text"), 10, "the page to show stable 1")

    n = journal_count()
    c.act("act-unshadow")
    expect("shadow_stopped", n, "no shadow", lambda v: v["shadow"] is None)
    c.shot("actions", "#actions")
    admin.reset()
    return f"{', '.join(done)} agree between page, API and journal; refusal shown as {shown!r}"


def check_xss(c, admin, a):
    d = c.d
    admin.reset()
    status, body = admin.call("POST", "/admin/models/breast-cancer/canary", {"version": "3", "weight": 5})
    if status != 200:
        raise Check(f"cannot set the canary: {status} {body}")
    c.select_model("breast-cancer")

    def dialog_shows_text():
        if XSS not in c.text("#confirm-text"):
            raise Check(f"the dialog does not show the reason as text: {c.text('#confirm-text')!r}")

    c.act("act-rollback", {"rollback-reason": XSS}, on_dialog=dialog_shows_text)
    stored = c.wait(lambda: next((e for e in reversed(admin.events())
                                  if e["kind"] == "rolled_back" and XSS in e["message"]), None), 10,
                    "the rollback with that reason in the journal")
    # The page's newest journal entry is that rollback, its reason shown as the literal text.
    newest = "const e = document.querySelector('#journal-list > li'); return e ? [e.dataset.kind, e.innerText] : null"
    c.wait(lambda: (lambda e: e and e[0] == "rolled_back" and XSS in e[1])(c.js(newest)), 10,
           "the reason as text in the newest entry of the page's journal")
    try:
        alert = d.switch_to.alert
        text = alert.text
        alert.dismiss()
        raise Check(f"a script ran: alert({text!r})")
    except NoAlertPresentException:
        pass
    imgs = d.find_elements(By.CSS_SELECTOR, 'img[src="x"]')
    if imgs or c.js("return document.images.length") != 0:
        raise Check("an <img> element was created from server data")
    c.shot("xss", "#journal")
    admin.reset()
    return f"reason shown literally ({stored['message']!r}); no alert, no <img>"


def send_wine_rows(http, rows=120):
    """Wine rows inside the training range whose `color` is half a training category, half one never seen."""
    manifest = json.loads((REPO / "models/wine/1/manifest.json").read_text())
    ranges = [(f["min"], f["max"]) for f in manifest["inputs"][0]["features"]]
    rng = random.Random(7)
    for i in range(rows):
        body = {"inputs": [
            {"name": "features", "datatype": "FP32", "shape": [1, len(ranges)],
             "data": [rng.uniform(lo, hi) for lo, hi in ranges]},
            {"name": "color", "datatype": "BYTES", "shape": [1, 1], "data": ["light" if i % 2 else "ultraviolet"]},
        ]}
        req = urllib.request.Request(f"{http.rstrip('/')}/v2/models/wine/infer", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=10).read()


def check_views(c, admin, a):
    d = c.d
    cluster = admin.get("/admin/cluster")
    c.wait(lambda: c.text("#fleet-body"), 10, "the fleet")
    fleet = c.text("#fleet-body")
    if cluster.get("mode") == "single-node":
        if "Single node" not in fleet or c.text("#fleet-badge") != "single node":
            raise Check(f"single-node mode not shown: {fleet!r}")
    elif len(d.find_elements(By.CSS_SELECTOR, "#replicas tbody tr")) != len(cluster["replicas"]):
        raise Check("the replicas table does not list every replica")
    # Traffic: charts when the gateway keeps a history, else the page says there is none.
    c.select_model("breast-cancer")
    status, traffic = admin.call("GET", "/admin/models/breast-cancer/traffic")
    if status == 404:
        c.wait(lambda: "No traffic history" in c.text("#traffic-body"), 10, "'no traffic history'")
        traffic_note = "no traffic endpoint: 'no traffic history' shown"
    else:
        versions = sorted({v for p in traffic["points"] for v in p["versions"]})
        if traffic["points"]:
            c.wait(lambda: len(d.find_elements(By.CSS_SELECTOR, "#traffic-charts svg[data-measure]")) == 4, 10,
                   "the four traffic charts")
            c.wait(lambda: d.find_elements(By.CSS_SELECTOR, '#traffic-charts svg[data-measure="rps"] path[data-version]'),
                   10, "a requests/s line")
        traffic_note = f"traffic of versions {versions} over {len(traffic['points'])} points"
    c.shot("traffic", "#traffic")
    c.shot("skew-breast-cancer", "#skew")
    # Skew: the wine model's categorical drift, after rows with a colour never seen in training.
    send_wine_rows(a.http)
    c.select_model("wine")
    c.wait(lambda: d.find_elements(By.CSS_SELECTOR, '.psi-bars g[data-feature="color"]'), 15, "wine's PSI bars")
    c.wait(lambda: d.find_elements(By.CSS_SELECTOR, 'table[id^="categorical-"] tr[data-feature="color"]'), 15,
           "the categorical drift of color")
    row = d.find_element(By.CSS_SELECTOR, 'table[id^="categorical-"] tr[data-feature="color"]').text
    skew = admin.get("/admin/models/wine/skew")
    unseen = [f["unseen_share"] for v in skew["versions"] for f in v["drift"]["features"] if f["name"] == "color"][0]
    if f"{unseen * 100:.2f}".rstrip("0").rstrip(".") not in row:
        raise Check(f"color's unseen share {unseen} is not in {row!r}")
    c.shot("skew-wine", "#skew")
    c.shot("console")
    return f"{cluster.get('mode', 'cluster')} fleet; {traffic_note}; wine color unseen {unseen:.0%} shown"


def check_shots(c, admin, a):
    wanted = ["refused", "models", "confirm", "rollout", "journal", "actions", "xss", "traffic", "skew-wine", "console"]
    bad = []
    for name in wanted:
        p = c.shots / f"{name}.png"
        if not p.exists() or p.stat().st_size < 1000 or p.read_bytes()[:8] != b"\x89PNG\r\n\x1a\n":
            bad.append(name)
    if bad:
        raise Check(f"missing or broken screenshots: {bad}")
    return f"{len(list(c.shots.glob('*.png')))} PNG files in {c.shots}"


def main():
    a = args_()
    a.shots.mkdir(parents=True, exist_ok=True)
    admin = Admin(a.admin, a.token)
    failed = 0
    c = Console(a, a.shots)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            checks = [
                ("load", lambda: check_load(c, admin, a)),
                ("rollout", lambda: check_rollout(c, admin, a, Path(tmp))),
                ("actions", lambda: check_actions(c, admin, a)),
                ("xss", lambda: check_xss(c, admin, a)),
                ("views", lambda: check_views(c, admin, a)),
                ("csp", lambda: check_csp(c, admin, a)),
                ("shots", lambda: check_shots(c, admin, a)),
            ]
            for name, run in checks:
                started = time.monotonic()
                try:
                    detail = run()
                    print(f"PASS {name}: {detail} ({time.monotonic() - started:.1f} s)", flush=True)
                except Exception as e:  # noqa: BLE001 - every failure is reported, and the next check still runs
                    failed += 1
                    reason = str(e) if isinstance(e, Check) else f"{type(e).__name__}: {e}"
                    print(f"FAIL {name}: {reason}", flush=True)
                    if not isinstance(e, Check):
                        traceback.print_exc()
                    try:
                        c.d.save_screenshot(str(a.shots / f"failed-{name}.png"))
                    except WebDriverException:
                        pass
                    for line in c.collect_logs()[-20:]:
                        print(f"  browser: {line.get('level')} {line.get('message')}", file=sys.stderr)
    finally:
        c.d.quit()
    if failed:
        print(f"console: {failed} check(s) failed")
        return 1
    print("console: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
