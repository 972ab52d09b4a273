"""The review page in a real browser: Debian's Chromium driven by Playwright, against a real ``f5-batch serve``, real
synthesis and QA workers (pocketsphinx), Redis and the S3 endpoint.

The tiny random model speaks noise, so with one take allowed every segment of the book ends ``needs_review`` after its
first take: the page lists all three. A person then renders one again (a new take row appears once it is judged),
accepts another (it leaves the list) and edits the third's text (it shows the new text, then the new text's take);
``f5-batch review`` sees the same. Without a token or a session nothing is served, and a cookie alone cannot post.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import requests

from tests.conftest import REF_TEXT, cli, own_queue, worker_env
from tests.services import GatewayProcess, WorkerProcess, wait_until

pytestmark = pytest.mark.timeout(300)

TOKEN = "review-page-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BOOK = "mice"
BOOK_TEXT = """The town mouse came to see him.

They sat down to a dinner of roots.

The larder was full of figs.
"""
NEW_TEXT = "The larder was full of ripe figs and cheese."
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def reviewed(redis_server, s3_server, prepared_random_weights, service_dir, tmp_path_factory, ref_wav_path):
    """A three-segment book rendered with its gate on, one take each, all flagged; a gateway in front of it."""
    if not CHROMIUM.exists():
        pytest.fail("Chromium is missing: apt-get install -y chromium (.ci/run does it)")
    work = tmp_path_factory.mktemp("review-page")
    bucket = s3_server.create_bucket("review-page")
    env = worker_env(redis_server.url, f"s3://{bucket}/r", prepared_random_weights, s3_server.endpoint,
                     F5_QUEUE=own_queue("review"), F5_QA_QUEUE=own_queue("review-qa"), F5_QA_MODE="asr",
                     F5_QA_ASR="pocketsphinx", F5_QA_MAX_ATTEMPTS="1", F5_GATEWAY_TOKENS=f"other-token,{TOKEN}")
    assert cli(env, "voice", "add", "narrator", str(ref_wav_path), "--text", REF_TEXT).returncode == 0
    logs = service_dir / "logs"
    synthesis = WorkerProcess(env, logs, concurrency=2).start(wait=False)
    qa = WorkerProcess({**env, "F5_WORKER_ROLE": "qa"}, logs, concurrency=1).start(wait=False)
    gateway = GatewayProcess(env, logs).start()
    try:
        corpus = work / "mice.txt"
        corpus.write_text(BOOK_TEXT)
        done = cli(env, "enqueue", str(corpus), "--book", BOOK, "--voice", "narrator", "--lang", "en",
                   "--batch-size", "1", "--nfe-step", "2", "--manifest-dir", str(work / "m"))
        assert done.returncode == 0, done.stderr
        synthesis.wait_ready()
        qa.wait_ready()

        def all_flagged() -> bool:
            listing = requests.get(f"{gateway.url}/v1/books/{BOOK}/review", headers=AUTH, timeout=10).json()
            return len(listing["flagged"]) == 3 and listing["counts"]["needs_review"] == 3

        wait_until(all_flagged, 180, "every segment to be flagged", interval=0.5)
        yield env, gateway, work / "m"
    finally:
        gateway.stop()
        qa.stop()
        synthesis.stop()


def _listing(gateway) -> dict:
    return requests.get(f"{gateway.url}/v1/books/{BOOK}/review", headers=AUTH, timeout=10).json()


def test_nothing_is_served_without_a_token_or_a_session(reviewed):
    _, gateway, _ = reviewed
    base = gateway.url
    audio = base + _listing(gateway)["flagged"][0]["audio_url"]
    assert requests.get(f"{base}/v1/books/{BOOK}/review", timeout=10).status_code == 401
    assert requests.get(audio, timeout=10).status_code == 401
    assert requests.get(audio, cookies={"f5_review": "1.9999999999.forged"}, timeout=10).status_code == 401
    page = requests.get(f"{base}/review/{BOOK}", allow_redirects=False, timeout=10)
    assert page.status_code == 303 and page.headers["location"] == f"/review/login?book={BOOK}"
    wrong = requests.post(f"{base}/review/login", data={"token": "guess", "book": BOOK}, allow_redirects=False,
                          timeout=10)
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
    # behind a TLS proxy (uvicorn trusts X-Forwarded-Proto from loopback) the cookie is Secure as well
    signed = requests.post(f"{base}/review/login", data={"token": TOKEN, "book": BOOK}, allow_redirects=False,
                           headers={"X-Forwarded-Proto": "https"}, timeout=10)
    cookie = signed.headers["set-cookie"]
    assert signed.status_code == 303 and signed.headers["location"] == f"/review/{BOOK}"
    assert all(flag in cookie for flag in ("HttpOnly", "SameSite=strict", "Secure", "Path=/")) and TOKEN not in cookie
    crossed = requests.post(f"{base}/review/login", data={"token": TOKEN, "book": BOOK}, allow_redirects=False,
                            headers={"Sec-Fetch-Site": "cross-site"}, timeout=10)
    assert crossed.status_code == 403
    session = cookie.split(";")[0].split("=", 1)[1]
    whole = requests.get(audio, cookies={"f5_review": session}, timeout=10)
    assert whole.status_code == 200 and whole.headers["content-type"] == "audio/wav"
    head = requests.get(audio, cookies={"f5_review": session}, headers={"Range": "bytes=0-43"}, timeout=10)
    assert head.status_code == 206 and head.content == whole.content[:44] and head.content.startswith(b"RIFF")


def _section(segment: str) -> str:
    return f"section.seg[data-id='{segment}']"


def test_the_page_lists_plays_rerenders_accepts_and_edits(reviewed):
    from playwright.sync_api import sync_playwright

    env, gateway, manifests = reviewed
    base = gateway.url
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            page = context.new_page()
            page.set_default_timeout(30_000)
            page.goto(f"{base}/review/{BOOK}")
            assert page.url == f"{base}/review/login?book={BOOK}"
            page.fill("input[name=token]", TOKEN)
            page.click("button[type=submit]")
            page.wait_for_url(f"{base}/review/{BOOK}")
            cookie = next(c for c in context.cookies() if c["name"] == "f5_review")
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and TOKEN not in cookie["value"]

            page.wait_for_function("() => document.querySelectorAll('section.seg').length === 3")
            first, second, third = page.eval_on_selector_all("section.seg", "nodes => nodes.map(n => n.dataset.id)")
            for player in page.locator("audio.kept").all():  # players load their take as they come into view
                player.scroll_into_view_if_needed()
            page.wait_for_function("() => Array.from(document.querySelectorAll('audio.kept')).every("
                                   "a => a.readyState >= 1 && a.duration > 0)")
            kept = page.get_attribute(f"{_section(first)} audio.kept", "src")
            assert page.evaluate("url => fetch(url).then(r => [r.status, r.headers.get('content-type')])",
                                 kept) == [200, "audio/wav"]
            assert page.evaluate("url => fetch(url, {method: 'POST'}).then(r => r.status)",
                                 f"/v1/books/{BOOK}/segments/{second}:accept") == 403, "a cookie alone cannot post"
            assert "Heard" in page.inner_text(_section(first)) and page.locator(
                f"{_section(first)} .reasons li").count() >= 1

            page.click(f"{_section(first)} button.rerender")
            page.wait_for_selector(f"{_section(first)} tr.attempt[data-attempt='2']", timeout=120_000)
            take2 = page.get_attribute(f"{_section(first)} tr.attempt[data-attempt='2'] audio", "src")
            assert page.evaluate("url => fetch(url).then(r => r.status)", take2) == 200

            page.click(f"{_section(second)} button.accept")
            page.wait_for_selector(_section(second), state="detached")

            page.fill(f"{_section(third)} textarea.edit-text", NEW_TEXT)
            page.click(f"{_section(third)} button.edit")
            page.wait_for_function("text => document.querySelector(\"" + _section(third) + " .text\")"
                                   ".textContent.includes(text)", arg=NEW_TEXT)
            page.wait_for_function("() => { const s = document.querySelector(\"" + _section(third) + "\");"
                                   " return s.dataset.state === 'needs_review' && s.querySelector('tr.attempt'); }",
                                   timeout=120_000)
            assert NEW_TEXT in page.inner_text(f"{_section(third)} .text")
            page.wait_for_timeout(2500)  # a poll later, the accepted segment is still gone
            assert page.locator(_section(second)).count() == 0 and page.locator("section.seg").count() == 2
        finally:
            browser.close()

    # the command line sees what the page did: the same records, the same manifest (read back from storage)
    fresh = manifests.parent / "fresh"
    shutil.rmtree(fresh, ignore_errors=True)
    done = cli(env, "review", BOOK, "--json", "--manifest-dir", str(fresh))
    assert done.returncode == 0, done.stderr
    review = json.loads(done.stdout)
    by_id = {item["id"]: item for item in review["flagged"]}
    assert set(by_id) == {first, third} and review["counts"]["accepted"] == 1
    assert [a["attempt"] for a in by_id[first]["attempts"]] == [1, 2]
    assert by_id[third]["text"] == NEW_TEXT
