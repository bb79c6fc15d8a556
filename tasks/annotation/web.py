"""The annotation page: people compare two responses and label the better one (RECIPE.md §5).

Server-rendered HTML (Jinja2 with autoescape: every string from the data is escaped) and a few
lines of JavaScript for the keyboard. One login per person: the token from the annotators
file (tasks/annotation/people.py), posted by a form or given once as `/login?token=`, becomes
a random session id in an httponly, samesite=strict cookie; the sessions live in this process
(a restart logs everyone out). Pairs and labels live in the `AnnotationStore`.

Responses are shown in an order seeded by (pair_id, annotator) (`shown_order`): the same person
sees the same order on every reload, and the submit maps left/right back to the stored a/b.
When a label completes a batch that a flow run waits on, `on_complete(batch_id, flow_run_id)`
runs after the response (default: resume the Prefect flow run); its failures are logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
from typing import Callable
from urllib.parse import parse_qs, urlencode
from uuid import UUID

from fastapi import BackgroundTasks, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from jinja2 import DictLoader, Environment

from data_contracts.preference_pairs import RATINGS
from tasks.annotation.store import AnnotationStore

log = logging.getLogger(__name__)

COOKIE = "annotation_session"
OnComplete = Callable[[str, str], None]  # (batch_id, flow_run_id)
LEVEL_KEYS = dict(zip(RATINGS, "qwer"))  # strongest first, as on the page
RESUME_INPUT = {"resume_with": "complete", "note": "batch complete (web page)"}


def shown_order(pair_id: str, annotator: str) -> tuple[str, str]:
    """(left, right) as stored names "a"/"b": a stable coin flip per (pair, person)."""
    digest = hashlib.sha256(f"{pair_id}\n{annotator}".encode()).digest()
    return ("a", "b") if digest[0] % 2 == 0 else ("b", "a")


class RedactTokens(logging.Filter):
    """Keeps `/login?token=...` out of the server's access log (uvicorn.access)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                re.sub(r"token=[^&\s]*", "token=<redacted>", a) if isinstance(a, str) else a
                for a in record.args
            )
        return True


def resume_flow_run(batch_id: str, flow_run_id: str) -> None:
    """Default `on_complete`: resume the paused/suspended Prefect flow run waiting on the batch."""
    from prefect.flow_runs import resume_flow_run as resume

    resume(UUID(flow_run_id), run_input=dict(RESUME_INPUT))
    log.info("batch %s complete: resumed flow run %s", batch_id, flow_run_id)


LAYOUT = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>{% block title %}Annotation{% endblock %}</title><style>
body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1300px;padding:0 1em}
header{display:flex;gap:1em;align-items:center;border-bottom:1px solid #ccc;padding:.5em 0}
header .who{margin-left:auto}.error{color:#a00;font-weight:600}
.turn{margin:.3em 0;padding:.4em .6em;border-radius:6px;white-space:pre-wrap}
.user{background:#eef3ff}.assistant{background:#f3f3f3}.system{background:#fff6dd}
.responses{display:grid;grid-template-columns:1fr 1fr;gap:1em}
.response{border:2px solid #ccc;border-radius:6px;padding:.6em}
.response:has(input[name=choice]:checked){border-color:#2a7}
.response pre{white-space:pre-wrap;font:inherit;margin:.3em 0}
label{margin-right:1em;cursor:pointer}kbd{border:1px solid #999;border-radius:3px;padding:0 .3em}
fieldset{margin:.6em 0}table{border-collapse:collapse}td,th{padding:.2em .6em;border:1px solid #ddd}
</style></head><body><header><strong>Preference annotation</strong>
{% if who %}<a href="/">batches</a><span class="who">signed in as <b id="who">{{ who }}</b>
<form method="post" action="/logout" style="display:inline"><button>log out</button></form>
</span>{% endif %}</header>{% block body %}{% endblock %}</body></html>"""

LOGIN = """{% extends "layout" %}{% block body %}<h1>Sign in</h1>
{% if message %}<p class="error" id="message">{{ message }}</p>{% endif %}
<form method="post" action="/login"><label>Your token
<input type="password" name="token" id="token" autofocus size="40"></label>
<button id="sign-in">Sign in</button></form>{% endblock %}"""

ERROR = """{% extends "layout" %}{% block title %}{{ status }}{% endblock %}{% block body %}
<h1>{{ heading }}</h1><p class="error" id="message">{{ message }}</p>
{% if back %}<p><a href="{{ back }}">back</a></p>{% endif %}{% endblock %}"""

HOME = """{% extends "layout" %}{% block body %}<h1>Batches</h1>
{% if not batches %}<p>No batches yet: a collection flow adds them.</p>{% endif %}<ul>
{% for b in batches %}<li><b>{{ b.title or b.batch_id }}</b> ({{ b.batch_id }}):
you labelled {{ b.done }} of {{ b.total }}; batch {{ b.state }}.
<a href="/label?batch={{ b.batch_id|urlencode }}">label</a>
<a href="/mine?batch={{ b.batch_id|urlencode }}">my labels</a></li>{% endfor %}</ul>
{% endblock %}"""

DONE = """{% extends "layout" %}{% block body %}<h1>Nothing left for you</h1>
<p id="progress">{{ done }} of {{ total }} in batch {{ title }}</p>
<p><a href="/mine?batch={{ batch_id|urlencode }}" id="mine">my labels in this batch</a></p>
{% endblock %}"""

ITEM = """{% extends "layout" %}{% block body %}
<p><span id="progress">{{ done }} of {{ total }} in batch {{ title }}</span> |
<a href="/mine?batch={{ batch_id|urlencode }}" id="mine">my labels in this batch</a></p>
{% if current %}<p id="revising">Revising your label (revision {{ current.revision }}):
a new revision is stored, the old one kept.</p>{% endif %}
<h2>Dialogue</h2><div id="dialogue">
{% if item.system %}<div class="turn system"><b>system</b>: {{ item.system }}</div>{% endif %}
{% for t in item.turns %}<div class="turn {{ t.role }}"><b>{{ t.role }}</b>: {{ t.content }}</div>
{% endfor %}</div>
<form method="post" id="label-form"
 action="/label?batch={{ batch_id|urlencode }}&amp;pair={{ item.pair_id|urlencode }}">
<input type="hidden" name="after" value="{{ after }}">
<div class="responses">{% for side in sides %}<div class="response" id="response-{{ side.name }}">
<h3>Response {{ loop.index }} ({{ side.name }})</h3><pre>{{ side.text }}</pre>
<label><input type="radio" name="choice" value="{{ side.name }}" required
{% if side.chosen %}checked{% endif %}> better <kbd>{{ side.key }}</kbd></label>
{% if item.is_safety %}<label><input type="radio" name="safe_{{ side.name }}" value="safe" required
{% if side.safe is true %}checked{% endif %}> safe <kbd>{{ side.safe_key }}</kbd></label>
<label><input type="radio" name="safe_{{ side.name }}" value="unsafe"
{% if side.safe is false %}checked{% endif %}> unsafe <kbd>{{ side.unsafe_key }}</kbd></label>
{% endif %}</div>{% endfor %}</div>
<fieldset><legend>How much better?</legend>{% for level, key in levels %}
<label><input type="radio" name="rating" value="{{ level }}" required
{% if current and current.rating == level %}checked{% endif %}>
{{ level|replace("_", " ") }} <kbd>{{ key }}</kbd></label>{% endfor %}</fieldset>
<label>Note (optional) <input type="text" name="note" size="60"
 value="{{ current.note if current else '' }}"></label>
<button id="submit">Submit <kbd>Enter</kbd></button></form>
<p>Keys: <kbd>1</kbd>/<kbd>&larr;</kbd> left better, <kbd>2</kbd>/<kbd>&rarr;</kbd> right better,
<kbd>q</kbd> <kbd>w</kbd> <kbd>e</kbd> <kbd>r</kbd> the four levels{% if item.is_safety %},
<kbd>a</kbd>/<kbd>z</kbd> left safe/unsafe, <kbd>k</kbd>/<kbd>m</kbd> right safe/unsafe{% endif %},
<kbd>Enter</kbd> submit (<kbd>Esc</kbd> leaves the note field).</p>
<script>
const form = document.getElementById("label-form");
const keys = {"1": ["choice", "left"], "arrowleft": ["choice", "left"],
  "2": ["choice", "right"], "arrowright": ["choice", "right"],
  "a": ["safe_left", "safe"], "z": ["safe_left", "unsafe"],
  "k": ["safe_right", "safe"], "m": ["safe_right", "unsafe"],
  {% for level, key in levels %}"{{ key }}": ["rating", "{{ level }}"],{% endfor %}};
document.addEventListener("keydown", (ev) => {
  if (ev.target.matches("input[type=text]")) { if (ev.key === "Escape") ev.target.blur(); return; }
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if (ev.key === "Enter") { ev.preventDefault(); form.requestSubmit(); return; }
  const hit = keys[ev.key.toLowerCase()];
  const input = hit && form.querySelector(`input[name="${hit[0]}"][value="${hit[1]}"]`);
  if (input) { input.checked = true; ev.preventDefault(); }
});
</script>{% endblock %}"""

MINE = """{% extends "layout" %}{% block body %}<h1>My labels in batch {{ batch_id }}</h1>
<p><a href="/label?batch={{ batch_id|urlencode }}">continue labelling</a></p>
<table id="my-labels"><tr><th>#</th><th>prompt</th><th>better</th><th>level</th>
<th>safety (left, right)</th><th>revision</th><th>labelled (UTC)</th><th></th></tr>
{% for r in rows %}<tr><td>{{ r.position + 1 }}</td><td>{{ r.prompt }}</td>
<td>{{ r.choice }}</td><td>{{ r.rating|replace("_", " ") }}</td><td>{{ r.safety }}</td>
<td>{{ r.revision }}</td><td>{{ r.when }}</td><td><a class="revise" href="/label?batch=
{{- batch_id|urlencode }}&amp;pair={{ r.pair_id|urlencode }}&amp;after=mine">revise</a></td></tr>
{% endfor %}</table>{% endblock %}"""

TEMPLATES = Environment(
    loader=DictLoader(
        {"layout": LAYOUT, "login": LOGIN, "error": ERROR, "home": HOME, "done": DONE}
        | {"item": ITEM, "mine": MINE}
    ),
    autoescape=True,
)


def _page(name: str, status_code: int = 200, **context) -> HTMLResponse:
    return HTMLResponse(TEMPLATES.get_template(name).render(**context), status_code=status_code)


def _error(status: int, heading: str, message: str, who=None, back=None) -> HTMLResponse:
    return _page(
        "error", status, status=status, heading=heading, message=message, who=who, back=back
    )


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form body (no python-multipart needed): the last value per field."""
    body = (await request.body()).decode("utf-8", errors="replace")
    return {k: v[-1] for k, v in parse_qs(body, keep_blank_values=True).items()}


def _read_label(form: dict[str, str], item: dict, order: tuple[str, str]) -> dict | str:
    """The submitted form as `AnnotationStore.label` keywords (left/right mapped back to the
    stored a/b through `order`), or the message saying what is missing."""
    choice = form.get("choice")
    if choice not in ("left", "right"):
        return "Pick the better response."
    safe = {}
    for side, stored in zip(("left", "right"), order):
        value = form.get(f"safe_{side}") or None
        if value not in (None, "safe", "unsafe"):
            return f"safe_{side} must be safe or unsafe."
        safe[stored] = None if value is None else value == "safe"
    if item["is_safety"] and None in safe.values():
        return "This is a safety prompt: label each response safe or unsafe."
    return {
        "preferred": order[0] if choice == "left" else order[1],
        "rating": form.get("rating", ""),
        "safe_a": safe["a"],
        "safe_b": safe["b"],
        "note": form.get("note", ""),
    }


def _safety_text(label: dict, order: tuple[str, str]) -> str:
    names = {True: "safe", False: "unsafe", None: "-"}
    return ", ".join(names[label[f"safe_{side}"]] for side in order)


def create_app(
    store: AnnotationStore, annotators: dict[str, str], on_complete: OnComplete | None = None
) -> FastAPI:
    """The page over `store`; `annotators`: token -> annotator id; `on_complete(batch_id,
    flow_run_id)` runs once when a label completes a batch with a flow run (None: resume
    the Prefect flow run)."""
    app = FastAPI(title="Preference annotation", docs_url=None, redoc_url=None)
    sessions: dict[str, str] = {}
    notified: set[str] = set()
    lock = threading.Lock()
    callback = on_complete or resume_flow_run

    def who_is(request: Request) -> str | None:
        return sessions.get(request.cookies.get(COOKIE, ""))

    def sign_in(token: str) -> HTMLResponse | RedirectResponse:
        found = next((i for t, i in annotators.items() if hmac.compare_digest(t, token)), None)
        if found is None:
            message = (
                "Unknown token: it is not in the annotators file. Check that you copied the "
                "whole token, or ask the person running the page for yours."
            )
            return _page("login", 401, message=message, who=None)
        session = secrets.token_urlsafe(32)
        sessions[session] = found
        response = RedirectResponse("/", status_code=303)  # drops ?token= from the address
        response.set_cookie(COOKIE, session, httponly=True, samesite="strict", path="/")
        return response

    def notify(batch_id: str, flow_run_id: str) -> None:
        try:
            callback(batch_id, flow_run_id)
        except Exception:  # the operator can still resume from the Prefect UI
            log.exception("batch %s complete: resuming flow run %s failed", batch_id, flow_run_id)

    def open_item(batch_id: str, pair_id: str, who: str) -> dict | HTMLResponse:
        if store.batch(batch_id) is None:
            return _error(404, "No such batch", f"There is no batch {batch_id!r}.", who, "/")
        mine = {it["pair_id"]: it for it in store.assigned(batch_id, who)}
        if pair_id in mine:
            return mine[pair_id]
        exists = any(it["pair_id"] == pair_id for it in store.items(batch_id))
        message = (
            f"Pair {pair_id!r} already has its labels from other people."
            if exists
            else f"Batch {batch_id!r} has no pair {pair_id!r}."
        )
        return _error(409 if exists else 404, "Not yours to label", message, who, "/")

    @app.get("/", response_class=HTMLResponse)
    def home(request: Request):
        who = who_is(request)
        if who is None:
            return _page("login", message=None, who=None)
        batches = [
            b | dict(zip(("done", "total"), store.progress(b["batch_id"], who)))
            for b in store.batches()
        ]
        return _page("home", who=who, batches=batches)

    @app.get("/login", response_class=HTMLResponse)
    def login_page(token: str | None = None):
        return sign_in(token) if token else _page("login", message=None, who=None)

    @app.post("/login")
    def login(form: dict = Depends(_form)):
        return sign_in(form.get("token", ""))

    @app.post("/logout")
    def logout(request: Request):
        sessions.pop(request.cookies.get(COOKIE, ""), None)
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    def _title(batch: str) -> str:
        got = store.batch(batch)
        return (got or {}).get("title") or batch

    @app.get("/label", response_class=HTMLResponse)
    def label_page(request: Request, batch: str, pair: str | None = None, after: str = "next"):
        who = who_is(request)
        if who is None:
            return RedirectResponse("/", status_code=303)
        if pair is None:
            if store.batch(batch) is None:
                return _error(404, "No such batch", f"There is no batch {batch!r}.", who, "/")
            item = store.next_item(batch, who)
            if item is None:
                done, total = store.progress(batch, who)
                return _page(
                    "done", who=who, batch_id=batch, title=_title(batch), done=done, total=total
                )
        else:
            item = open_item(batch, pair, who)
            if isinstance(item, HTMLResponse):
                return item
        done, total = store.progress(batch, who)
        mine = [r for r in store.current_labels(batch) if r["annotator"] == who]
        current = next((r for r in mine if r["pair_id"] == item["pair_id"]), None)
        order = shown_order(item["pair_id"], who)
        sides = [
            {
                "name": name,
                "text": item[f"response_{stored}"],
                "key": key,
                "safe_key": safe_key,
                "unsafe_key": unsafe_key,
                "chosen": bool(current) and current["preferred"] == stored,
                "safe": current[f"safe_{stored}"] if current else None,
            }
            for name, stored, key, safe_key, unsafe_key in zip(
                ("left", "right"), order, ("1 / ←", "2 / →"), "ak", "zm"
            )
        ]
        return _page(
            "item",
            who=who,
            batch_id=batch,
            title=_title(batch),
            item=item,
            sides=sides,
            current=current,
            done=done,
            total=total,
            levels=list(LEVEL_KEYS.items()),
            after="mine" if after == "mine" else "next",
        )

    @app.post("/label")
    def post_label(
        request: Request,
        background: BackgroundTasks,
        batch: str,
        pair: str,
        form: dict = Depends(_form),
    ):
        who = who_is(request)
        if who is None:
            return _error(401, "Not signed in", "Sign in with your token first.", None, "/")
        item = open_item(batch, pair, who)
        if isinstance(item, HTMLResponse):
            return item
        back = "/label?" + urlencode({"batch": batch, "pair": pair})
        label = _read_label(form, item, shown_order(pair, who))
        if isinstance(label, str):
            return _error(400, "Label not stored", label, who, back)
        was_complete = store.is_complete(batch)
        try:
            store.label(batch, pair, who, **label)
        except ValueError as err:
            return _error(400, "Label not stored", str(err), who, back)
        flow_run_id = store.batch(batch)["flow_run_id"]
        if not was_complete and flow_run_id and store.is_complete(batch):
            with lock:
                first = batch not in notified
                notified.add(batch)
            if first:
                background.add_task(notify, batch, flow_run_id)
        page = "/mine" if form.get("after") == "mine" else "/label"
        return RedirectResponse(f"{page}?{urlencode({'batch': batch})}", status_code=303)

    @app.get("/mine", response_class=HTMLResponse)
    def my_labels(request: Request, batch: str):
        who = who_is(request)
        if who is None:
            return RedirectResponse("/", status_code=303)
        items = {it["pair_id"]: it for it in store.items(batch)}
        rows = []
        for label in store.current_labels(batch):
            if label["annotator"] != who:
                continue
            item, order = items[label["pair_id"]], shown_order(label["pair_id"], who)
            rows.append(
                label
                | {
                    "position": item["position"],
                    "prompt": item["turns"][-1]["content"][:120],
                    "choice": "left" if label["preferred"] == order[0] else "right",
                    "safety": _safety_text(label, order),
                    "when": label["labelled_at"].strftime("%Y-%m-%d %H:%M:%S"),
                }
            )
        return _page("mine", who=who, batch_id=batch, rows=rows)

    @app.get("/api/progress")
    def progress(request: Request, batch: str):
        who = who_is(request)
        if who is None:
            return JSONResponse({"detail": "sign in first"}, status_code=401)
        done, total = store.progress(batch, who)
        all_done, all_total = store.progress(batch)
        return {
            "batch_id": batch,
            "annotator": who,
            "done": done,
            "total": total,
            "batch_done": all_done,
            "batch_total": all_total,
        }

    return app
