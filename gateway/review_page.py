"""The review page and its sign-in form: plain HTML with inline CSS and a little vanilla JavaScript, no build step, no
CDN, so that it works on a machine with no internet (a studio's, a cluster's).

The server renders the page around the book's review list (embedded as JSON); the script draws the segments from it,
polls ``GET /v1/books/{book}/review`` every 2 s and redraws only the segments whose data changed, so a player that is
playing keeps playing. Every value from a book or a recogniser goes into the page as text (``textContent``), never as
markup, and a Content-Security-Policy with a per-response nonce allows only this page's own script and style.
"""

from __future__ import annotations

import html
import json
import re
import secrets

from fastapi.responses import HTMLResponse

from gateway.models import ReviewList

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 60rem; padding: 1rem; color: #222; }
header { display: flex; justify-content: space-between; align-items: baseline; gap: 1rem; flex-wrap: wrap; }
.seg { border: 1px solid #ccc; border-radius: 6px; padding: .75rem 1rem; margin: 1rem 0; }
.seg h2 { font-size: 1rem; margin: 0 0 .5rem; }
.state { font-weight: normal; color: #a40; margin-left: .5rem; }
.line { margin: .25rem 0; }
.label { color: #666; display: inline-block; min-width: 4.5rem; }
mark.missing { background: #fdd; text-decoration: line-through; }
mark.extra { background: #dfd; }
.reasons { margin: .25rem 0; padding-left: 1.25rem; color: #555; }
table { border-collapse: collapse; margin: .5rem 0; width: 100%; }
td, th { border-top: 1px solid #eee; padding: .2rem .4rem; text-align: left; font-size: .9rem; }
audio { height: 2rem; vertical-align: middle; }
.actions { display: flex; flex-wrap: wrap; gap: .5rem; align-items: center; margin-top: .5rem; }
.actions textarea { flex: 1 1 100%; min-height: 3rem; font: inherit; }
.seed { width: 9rem; }
.note { color: #036; margin: .25rem 0 0; }
.error { color: #b00; }
form.login { display: grid; gap: .5rem; max-width: 24rem; }
"""

SCRIPT = """
(function () {
  "use strict";
  var book = document.body.dataset.book;
  var csrf = document.querySelector('meta[name="csrf-token"]').content;
  var root = document.getElementById("segments");
  var shown = new Map();    // id -> {sig, node}
  var waiting = new Map();  // id -> takes it had when a new take was asked for
  var notes = new Map();    // id -> what the last action did
  var drafts = new Map();   // id -> edited text not sent yet
  var gone = new Set();     // accepted here; hidden until the list agrees
  var edits = new Map();    // id -> text sent; its note stays until a take of that text is listed

  function el(tag, props, children) {
    var node = document.createElement(tag);
    Object.keys(props || {}).forEach(function (k) {
      if (k === "dataset") { Object.assign(node.dataset, props[k]); } else { node[k] = props[k]; }
    });
    (children || []).forEach(function (c) { node.append(c); });
    return node;
  }
  function fmt(x) { return x === null || x === undefined ? "\\u2013" : x.toFixed(2); }
  function marked(words) {
    var out = [];
    words.forEach(function (w, i) {
      if (i) { out.push(" "); }
      out.push(w.mark ? el("mark", {className: w.mark, textContent: w.word,
                                    title: w.mark === "missing" ? "not heard" : "not in the text"}) : w.word);
    });
    return out;
  }
  function player(url, kept) {
    if (!url) { return el("span", {textContent: "replaced by the kept take"}); }
    var audio = el("audio", {controls: true, preload: "none", src: url});
    if (kept) { audio.className = "kept"; visible.observe(audio); }
    return audio;
  }
  var visible = new IntersectionObserver(function (seen) {
    seen.forEach(function (e) {
      if (e.isIntersecting) { e.target.preload = "metadata"; e.target.load(); visible.unobserve(e.target); }
    });
  });

  function takes(item) {
    var rows = item.attempts.map(function (t) {
      var name = "take " + t.attempt + (t.attempt === item.best ? " (kept)" : "") + (t.manual ? " by hand" : "");
      return el("tr", {className: "attempt", dataset: {attempt: String(t.attempt)}}, [
        el("td", {textContent: name}), el("td", {textContent: String(t.seed)}),
        el("td", {textContent: fmt(t.score)}), el("td", {textContent: fmt(t.cer)}),
        el("td", {textContent: t.passed ? "passed" : "failed"}), el("td", {textContent: t.transcript || ""}),
        el("td", {}, [player(t.audio_url, false)])]);
    });
    var head = el("tr", {}, ["take", "seed", "score", "CER", "", "heard", ""].map(function (h) {
      return el("th", {textContent: h});
    }));
    return el("table", {className: "attempts"}, [head].concat(rows));
  }

  function actions(item) {
    var pending = waiting.has(item.id) || item.awaiting;
    var seed = el("input", {className: "seed", type: "number", min: 0, placeholder: "seed (optional)"});
    var text = el("textarea", {className: "edit-text", value: drafts.has(item.id) ? drafts.get(item.id) : item.text});
    text.addEventListener("input", function () { drafts.set(item.id, text.value); });
    var accept = el("button", {className: "accept", textContent: "Accept this take", disabled: pending});
    var again = el("button", {className: "rerender", textContent: "Render again", disabled: pending});
    var edit = el("button", {className: "edit", textContent: "Edit text and render again", disabled: pending});
    accept.addEventListener("click", function () {
      act(item, "accept", {}).then(function () {
        gone.add(item.id); drop(item.id); say();
      }, function () {});
    });
    again.addEventListener("click", function () {
      var body = seed.value === "" ? {} : {seed: Number(seed.value)};
      waiting.set(item.id, item.attempts.length);
      act(item, "rerender", body).then(function (done) {
        note(item, "take " + done.attempt + " sent (seed " + done.seed + "); it shows here when judged");
      }, function () { waiting.delete(item.id); });
    });
    edit.addEventListener("click", function () {
      act(item, "edit", {text: text.value}).then(function (done) {
        drafts.delete(item.id);
        edits.set(item.id, done.text);
        notes.set(item.id, "sent as new text (version " + done.version + "); its take shows here when judged");
        var words = done.text.split(" ").map(function (w) { return {word: w, mark: null}; });
        var edited = render(Object.assign({}, item, {text: done.text, text_diff: words, awaiting: true,
                                                     state: "pending", attempts: []}));
        shown.get(item.id).node.replaceWith(edited);
        shown.set(item.id, {sig: "edited", node: edited});
      }, function () {});
    });
    return el("div", {className: "actions"}, [accept, again, seed, text, edit]);
  }

  function render(item) {
    var lines = [
      el("h2", {}, [item.id + " \\u00b7 chapter " + item.chapter + ", segment " + item.index,
                    el("span", {className: "state", textContent: item.awaiting ? "rendering the new text" :
                                item.state})]),
      el("p", {className: "line text"}, [el("span", {className: "label", textContent: "Text"}),
                                         el("span", {className: "words"}, marked(item.text_diff))]),
    ];
    if (item.raw && item.raw.split(/\\s+/).join(" ").trim() !== item.text) {
      lines.push(el("p", {className: "line raw"}, [el("span", {className: "label", textContent: "Source"}),
                                                   item.raw]));
    }
    if (!item.awaiting) {
      lines.push(
        el("p", {className: "line heard"}, [el("span", {className: "label", textContent: "Heard"}),
          item.transcript === null ? el("em", {textContent: "not transcribed"}) :
            item.heard_diff.length ? el("span", {className: "words"}, marked(item.heard_diff)) :
              el("em", {textContent: "nothing"})]),
        el("p", {className: "line score"}, [el("span", {className: "label", textContent: "Kept"}),
          "score " + fmt(item.score) + " \\u00b7 CER " + fmt(item.cer) + " ", player(item.audio_url, true)]),
        el("ul", {className: "reasons"}, item.reasons.map(function (r) {
          return el("li", {}, [el("code", {textContent: r.code}), " " + r.message]);
        })),
        takes(item));
    }
    if (waiting.has(item.id)) { lines.push(el("p", {className: "note", textContent: "rendering a new take\\u2026"})); }
    lines.push(actions(item), el("p", {className: "note status", role: "status",
                                      textContent: notes.get(item.id) || ""}));
    return el("section", {className: "seg", dataset: {id: item.id, state: item.state}}, lines);
  }

  function act(item, action, body) {
    var url = "/v1/books/" + encodeURIComponent(book) + "/segments/" + encodeURIComponent(item.id) + ":" + action;
    return fetch(url, {method: "POST", credentials: "same-origin", body: JSON.stringify(body),
                       headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf}})
      .then(function (r) {
        return r.json().then(function (j) {
          if (!r.ok) { throw new Error(j.message || String(r.status)); }
          return j;
        });
      })
      .catch(function (e) { note(item, action + " failed: " + e.message, true); throw e; });
  }
  function note(item, text, error) {
    notes.set(item.id, text);
    var entry = shown.get(item.id);
    if (entry) {
      var p = entry.node.querySelector(".status");
      p.textContent = text;
      p.classList.toggle("error", !!error);
    }
  }
  function drop(id) {
    var entry = shown.get(id);
    if (entry) { entry.node.remove(); shown.delete(id); }
  }
  function say() {
    document.getElementById("empty").hidden = shown.size > 0;
  }

  function update(listing) {
    var counts = listing.counts;
    document.getElementById("counts").textContent = Object.keys(counts).filter(function (k) {
      return counts[k];
    }).map(function (k) { return k.replace("_", " ") + " " + counts[k]; }).join(" \\u00b7 ");
    var listed = new Set(listing.flagged.map(function (i) { return i.id; }));
    gone.forEach(function (id) { if (!listed.has(id)) { gone.delete(id); } });
    shown.forEach(function (_, id) { if (!listed.has(id) || gone.has(id)) { drop(id); } });
    var at = 0;
    listing.flagged.forEach(function (item) {
      if (gone.has(item.id)) { return; }
      if (waiting.has(item.id) && item.attempts.length > waiting.get(item.id)) {
        waiting.delete(item.id); notes.delete(item.id);
      }
      if (edits.get(item.id) === item.text && !item.awaiting) { edits.delete(item.id); notes.delete(item.id); }
      var sig = JSON.stringify(item) + (waiting.has(item.id) ? "|waiting" : "");
      var entry = shown.get(item.id);
      if (!entry || entry.sig !== sig) {
        var node = render(item);
        if (entry) { entry.node.replaceWith(node); }
        entry = {sig: sig, node: node};
        shown.set(item.id, entry);
      }
      if (root.children[at] !== entry.node) { root.insertBefore(entry.node, root.children[at] || null); }
      at += 1;
    });
    say();
  }

  function poll() {
    fetch("/v1/books/" + encodeURIComponent(book) + "/review", {credentials: "same-origin"})
      .then(function (r) {
        if (r.status === 401) { location.href = "/review/login?book=" + encodeURIComponent(book); return null; }
        return r.ok ? r.json() : null;
      })
      .then(function (listing) { if (listing) { update(listing); } })
      .catch(function () {})
      .then(function () { setTimeout(poll, 2000); });
  }

  update(JSON.parse(document.getElementById("initial").textContent));
  setTimeout(poll, 2000);
})();
"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="{{csrf}}"><title>Review: {{book}}</title><style nonce="{{nonce}}">{{style}}</style>
</head><body data-book="{{book}}">
<header><h1>Review: {{book}}</h1><span id="counts"></span>
<form method="post" action="/review/logout"><button>Sign out</button></form></header>
<p>Segments no take of which passed the quality gate. Words the recogniser did not hear are
<mark class="missing">struck</mark>; words it heard that are not in the text are <mark class="extra">green</mark>.</p>
<p id="empty" hidden>Nothing to review.</p>
<main id="segments"></main>
<script type="application/json" id="initial">{{initial}}</script>
<script nonce="{{nonce}}">{{script}}</script>
</body></html>
"""

LOGIN = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in: f5-batch review</title><style nonce="{{nonce}}">{{style}}</style></head><body>
<h1>Sign in to review</h1><p class="error" role="alert">{{error}}</p>
<form class="login" method="post" action="/review/login">
<label>Token <input type="password" name="token" autocomplete="current-password" required autofocus></label>
<label>Book <input name="book" value="{{book}}" pattern="[A-Za-z0-9][A-Za-z0-9._\\-]{0,63}" required></label>
<button type="submit">Sign in</button></form>
</body></html>
"""


def _fill(template: str, **values: str) -> str:
    """``{{name}}`` placeholders filled in one pass: a value is never searched for placeholders itself."""
    return re.sub(r"\{\{(\w+)\}\}", lambda match: values[match[1]], template)


def _respond(body: str, nonce: str, status: int = 200, connect: bool = False) -> HTMLResponse:
    """The page, with headers that keep it in its place: only its own script and style run, no framing (no one can
    trick a click on Accept), no caching (it carries a CSRF token), no referrer leaking the book's name."""
    sources = "'self'" if connect else "'none'"
    policy = (f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; media-src 'self'; "
              f"connect-src {sources}; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
    return HTMLResponse(body, status, headers={
        "Content-Security-Policy": policy, "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"})


def review(listing: ReviewList, csrf: str) -> HTMLResponse:
    nonce = secrets.token_urlsafe(16)
    initial = json.dumps(listing.model_dump(mode="json"), ensure_ascii=False)
    initial = initial.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return _respond(_fill(PAGE, csrf=html.escape(csrf), book=html.escape(listing.book), nonce=nonce, style=STYLE,
                          initial=initial, script=SCRIPT), nonce, connect=True)


def login(book: str, error: str | None = None, status: int = 200) -> HTMLResponse:
    nonce = secrets.token_urlsafe(16)
    return _respond(_fill(LOGIN, book=html.escape(book), error=html.escape(error or ""), nonce=nonce, style=STYLE),
                    nonce, status)
