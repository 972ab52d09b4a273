"""The review page's routes: a login that trades a token for a cookie, the page, the JSON it polls, each take's audio,
and the three actions (accept, render again, edit the text). The actions are ``worker.books.review``'s, the same the
CLI runs (``f5-batch review``, ``rerender``), so a page and a terminal never disagree about what a button did.

Authentication is the gateway's bearer token, or the session cookie a login gives (a browser cannot put a header on
``<audio src>``). A request that came with the cookie may change things only with the page's CSRF header as well.
"""

from __future__ import annotations

import difflib
import re
import threading
import time
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Depends, Header, Path, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from fastapi.security import APIKeyCookie, APIKeyHeader
from fastapi.security import HTTPAuthorizationCredentials as Bearer
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from gateway import review_page
from gateway.errors import ApiError, validation_error
from gateway.models import (
    DiffWord,
    EditRequest,
    ErrorBody,
    RerenderRequest,
    ReviewAction,
    ReviewItem,
    ReviewList,
    ReviewTake,
)
from gateway.routes import WAV, Credentials, Service, _room
from gateway.security import CSRF_HEADER, SESSION_COOKIE
from gateway.service import GatewayService
from worker.books.manifest import BookRecord, ManifestEntry
from worker.books.review import Flagged, ReviewError, accept, book_from_storage, edit_text, flagged, qa_counts, rerender
from worker.qa.textnorm import normalize
from worker.runtime.takes import SegmentTakes, TakeRecord, TakeRecords
from worker.storage import ObjectNotFound, Storage

BOOK = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"  # the producer's book ids (producer.jobs.BOOK_ID)
BookName = Annotated[str, Path(pattern=BOOK)]
Cookie = Annotated[str | None, Depends(APIKeyCookie(
    name=SESSION_COOKIE, auto_error=False, description="The session cookie GET/POST /review/login gives."))]
Csrf = Annotated[str | None, Depends(APIKeyHeader(
    name=CSRF_HEADER, auto_error=False, description="The review page's CSRF token; needed with the cookie."))]
BOOK_TTL_S = 2.0  # the page polls every 2 s, and each of its players asks for a take: one manifest read serves them
LOGIN_BUCKET = -2  # the rate bucket every sign-in attempt takes from (-1 is an open gateway's)
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody}, 409: {"model": ErrorBody}}


@dataclass(frozen=True)
class Caller:
    index: int  # the token's index in F5_GATEWAY_TOKENS (-1: an open gateway)
    session: str | None  # the cookie, when that is what authenticated the request ("" on an open gateway)


def _identify(request: Request, credentials: Bearer | None, cookie: str | None) -> Caller | None:
    state = request.app.state
    if credentials is not None:
        return Caller(state.auth.check(credentials), None)  # a wrong header is a 401, whatever the cookie says
    index = state.sessions.verify(cookie)
    if index is not None:
        return Caller(index, cookie or "")
    if state.auth.open and not state.auth.tokens:
        return Caller(-1, "")
    return None


async def reader(request: Request, credentials: Credentials, cookie: Cookie) -> Caller:
    """A valid bearer token or session cookie, within its token's rate."""
    caller = _identify(request, credentials, cookie)
    if caller is None:
        raise ApiError(401, "unauthorized", "a valid bearer token or review session is required (sign in at "
                       "/review/login)", headers={"WWW-Authenticate": "Bearer"})
    request.app.state.rate_limit.take(caller.index)
    return caller


async def writer(request: Request, caller: Annotated[Caller, Depends(reader)], csrf: Csrf) -> Caller:
    """As :func:`reader`; a request authenticated by the cookie also carries the session's CSRF token."""
    if caller.session is not None:
        request.app.state.sessions.check_csrf(caller.index, caller.session, csrf)
    return caller


class _Books:
    """Each book's record and manifest, read at most every ``BOOK_TTL_S`` by this process (edits drop theirs)."""

    def __init__(self, storage: Storage, prefix: str) -> None:
        self.storage, self.prefix = storage, prefix
        self._books: dict[str, tuple[float, tuple[BookRecord, list[ManifestEntry]]]] = {}
        self._lock = threading.Lock()
        self._edited = 0  # edits so far: a read that an edit overtook is not cached
        self.edits = threading.Lock()  # one edit at a time: each rewrites the whole manifest

    def get(self, book: str, fresh: bool = False) -> tuple[BookRecord, list[ManifestEntry]]:
        with self._lock:
            cached, edited = self._books.get(book), self._edited
        if cached is not None and not fresh and time.monotonic() - cached[0] < BOOK_TTL_S:
            return cached[1]
        try:
            value = book_from_storage(self.storage, self.prefix, book)
        except FileNotFoundError:
            raise ApiError(404, "unknown_book", f"no book {book!r} under {self.prefix!r}") from None
        with self._lock:
            if len(self._books) > 64:
                self._books.clear()
            if edited == self._edited:
                self._books[book] = (time.monotonic(), value)
        return value

    def forget(self, book: str) -> None:
        with self._lock:
            self._edited += 1
            self._books.pop(book, None)


@dataclass
class Review:
    """What the review routes share: the service, the take records, the books' manifests."""

    svc: GatewayService
    takes: TakeRecords
    books: _Books


_BUILDING = threading.Lock()


def review(request: Request, svc: Service) -> Review:
    state = request.app.state
    with _BUILDING:  # built on first use (the OpenAPI document needs no Redis), once: one edit lock per process
        if getattr(state, "review", None) is None:
            state.review = Review(svc, TakeRecords.for_results(svc.settings.broker),
                                  _Books(svc.storage, svc.settings.gateway.prefix))
    built: Review = state.review
    return built


Context = Annotated[Review, Depends(review)]
pages = APIRouter(include_in_schema=False)
router = APIRouter()


# ------------------------------------------------------------------------------------------------- shaping


def _marked(words: list[str], lang: str) -> list[tuple[str, list[str]]]:
    return [(word, normalize(word, lang).split()) for word in words]


def word_diff(text: str, transcript: str | None, lang: str) -> tuple[list[DiffWord], list[DiffWord]]:
    """The text's words as written, marked where the transcript lacks them, and the transcript's, marked where the
    text lacks them. Words are compared after the gate's own normalisation (numbers spelled, case and punctuation
    gone), so only what was said differs; a word that normalises to several (``1605``) is marked if any is."""
    if transcript is None:
        return [DiffWord(word=w) for w in text.split()], []
    said, heard = _marked(text.split(), lang), _marked(transcript.split(), lang)
    a = [(n, i) for i, (_, norm) in enumerate(said) for n in norm]
    b = [(n, i) for i, (_, norm) in enumerate(heard) for n in norm]
    missing: set[int] = set()
    extra: set[int] = set()
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, [w for w, _ in a], [w for w, _ in b],
                                                       autojunk=False).get_opcodes():
        if tag in ("delete", "replace"):
            missing.update(i for _, i in a[i1:i2])
        if tag in ("insert", "replace"):
            extra.update(j for _, j in b[j1:j2])
    return ([DiffWord(word=w, mark="missing" if i in missing else None) for i, (w, _) in enumerate(said)],
            [DiffWord(word=w, mark="extra" if j in extra else None) for j, (w, _) in enumerate(heard)])


def audio_url(book: str, segment: str, record: SegmentTakes, take: TakeRecord) -> str | None:
    """The take's URL, or None once another take was copied over it (take 1 lives at the segment's key)."""
    if take.key == record.key and record.at_key != take.attempt:
        return None
    return f"/v1/books/{book}/segments/{quote(segment, safe='')}/takes/{take.attempt}/audio"


def _item(book: str, lang: str, found: Flagged) -> ReviewItem:
    shown = found.as_dict()
    record = found.record
    attempts = [ReviewTake.model_validate({**a, "audio_url": audio_url(book, found.entry.id, record, take)})
                for a, take in zip(shown["attempts"], record.attempts, strict=True)]
    text_diff, heard_diff = word_diff(shown["text"], shown["transcript"], record.lang or lang)
    kept = record.kept
    return ReviewItem.model_validate({**shown, "attempts": attempts, "text_diff": text_diff, "heard_diff": heard_diff,
                                      "audio_url": audio_url(book, found.entry.id, record, kept) if kept else None})


def _awaiting(entry: ManifestEntry) -> ReviewItem:
    return ReviewItem(id=entry.id, chapter=entry.chapter, index=entry.index, text=entry.normalized, raw=entry.text,
                      state="pending", awaiting=True, audio_url=None,
                      text_diff=[DiffWord(word=w) for w in entry.normalized.split()])


def review_list(ctx: Review, book: str) -> ReviewList:
    """The flagged segments, and the edited ones whose new text has no verdict yet (so that they stay in sight)."""
    record, entries = ctx.books.get(book)
    records = ctx.takes.by_key(book, [e.key for e in entries])
    items = [_item(book, record.lang, found) for found in flagged(records, entries)]
    items += [_awaiting(e) for e in entries if e.key not in records and (e.model_extra or {}).get("original")]
    items.sort(key=lambda item: (item.chapter, item.index))
    return ReviewList(book=book, version=record.version, counts=qa_counts(records, entries), flagged=items)


def _entry(entries: list[ManifestEntry], segment: str) -> ManifestEntry:
    entry = next((e for e in entries if e.id == segment), None)
    if entry is None:
        raise ApiError(404, "unknown_segment", f"no segment {segment!r} in this book")
    return entry


def _acting(error: ReviewError) -> ApiError:
    return ApiError(409, "not_reviewable", str(error))


# ------------------------------------------------------------------------------------------------- audio


def _span(header: str | None, size: int) -> tuple[int, int] | None:
    """One ``bytes=`` range as (first, last), None for none or several (then the whole file is sent), or a 416."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header[6:].strip().partition("-")
    if not (first.isdigit() or last.isdigit()):
        return None
    if first.isdigit():
        start, end = int(first), min(int(last), size - 1) if last.isdigit() else size - 1
    else:
        start, end = max(size - int(last), 0), size - 1
    if start > end or start >= size:
        raise ApiError(416, "bad_range", f"the take has {size} bytes", headers={"Content-Range": f"bytes */{size}"})
    return start, end


def wav_response(storage: Storage, key: str, range_header: str | None) -> Response:
    """The WAV at ``key``, whole (streamed) or one byte range of it (players seek with ranges)."""
    info = storage.head(key)
    if info is None:
        raise ApiError(404, "audio_gone", "this take is no longer in storage")
    headers = {"Accept-Ranges": "bytes", "Cache-Control": "private, no-store"}
    span = _span(range_header, info.size)
    try:
        if span is None:
            return StreamingResponse(storage.open(key), media_type="audio/wav",
                                     headers={**headers, "Content-Length": str(info.size)})
        data = storage.get(key)
    except ObjectNotFound:
        raise ApiError(404, "audio_gone", "this take is no longer in storage") from None
    start, end = span
    return Response(data[start:end + 1], 206, media_type="audio/wav",
                    headers={**headers, "Content-Range": f"bytes {start}-{end}/{info.size}"})


@router.get("/v1/books/{book}/segments/{segment}/takes/{attempt}/audio", response_class=Response,
            responses={200: WAV, 206: WAV, **NOT_FOUND}, dependencies=[Depends(reader)])
def take_audio(book: BookName, segment: str, attempt: Annotated[int, Path(ge=1)], ctx: Context,
               byte_range: Annotated[str | None, Header(alias="Range")] = None) -> Response:
    """One take of a segment, from storage. Only the takes its quality record lists can be named: no other key."""
    _, entries = ctx.books.get(book)
    entry = _entry(entries, segment)
    record = ctx.takes.get(book, entry.key)
    take = record.take(attempt) if record is not None else None
    if record is None or take is None:
        raise ApiError(404, "unknown_take", f"{segment} has no take {attempt}")
    if audio_url(book, segment, record, take) is None:
        raise ApiError(404, "take_replaced", f"take {attempt} of {segment} was replaced by take {record.at_key}, "
                       "the kept one, at the segment's key")
    return wav_response(ctx.svc.storage, take.key, byte_range)


# ------------------------------------------------------------------------------------------------- JSON


@router.get("/v1/books/{book}/review", response_model=ReviewList, responses=NOT_FOUND,
            dependencies=[Depends(reader)])
def book_review(book: BookName, ctx: Context) -> ReviewList:
    """What ``f5-batch review BOOK --json`` lists, with audio URLs and word diffs: what the review page polls."""
    return review_list(ctx, book)


@router.post("/v1/books/{book}/segments/{segment}:accept", response_model=ReviewAction, responses=NOT_FOUND,
             dependencies=[Depends(writer)])
def accept_take(book: BookName, segment: str, ctx: Context) -> ReviewAction:
    """Keep the segment's current take: it leaves the review list."""
    _, entries = ctx.books.get(book)
    try:
        record = accept(ctx.takes, book, _entry(entries, segment))
    except ReviewError as exc:
        raise _acting(exc) from None
    return ReviewAction(id=segment, action="accept", state=record.state, attempt=record.best)


@router.post("/v1/books/{book}/segments/{segment}:rerender", response_model=ReviewAction, responses=NOT_FOUND,
             dependencies=[Depends(writer)])
def rerender_take(book: BookName, segment: str, ctx: Context, body: RerenderRequest | None = None) -> ReviewAction:
    """One more take, with a new seed (or ``seed``), judged like any other; the page shows it when it lands."""
    _room(ctx.svc)
    _, entries = ctx.books.get(book)
    try:
        job = rerender(ctx.svc.app, ctx.svc.settings.broker.queue, ctx.takes, book, _entry(entries, segment),
                       body.seed if body else None)
    except ReviewError as exc:
        raise _acting(exc) from None
    assert job.qa is not None
    return ReviewAction(id=segment, action="rerender", state="pending", attempt=job.qa.attempt,
                        seed=job.resolved_seed())


@router.post("/v1/books/{book}/segments/{segment}:edit", response_model=ReviewAction, responses=NOT_FOUND,
             dependencies=[Depends(writer)])
def edit_segment(book: BookName, segment: str, body: EditRequest, ctx: Context) -> ReviewAction:
    """Speak the segment as ``text``: a new version of the book (kept by later enqueues), its first take sent."""
    _room(ctx.svc)
    with ctx.books.edits:  # read, change and write the manifest as one step in this process
        record, entries = ctx.books.get(book, fresh=True)
        try:
            new_record, updated = edit_text(ctx.svc.app, ctx.svc.settings.broker.queue, ctx.svc.storage, ctx.takes,
                                            record, entries, _entry(entries, segment), body.text)
        except ValidationError as exc:
            raise validation_error(exc) from None
        except ReviewError as exc:
            raise _acting(exc) from None
        finally:
            ctx.books.forget(book)
    return ReviewAction(id=segment, action="edit", state="pending", text=updated.normalized,
                        version=new_record.version)


# ------------------------------------------------------------------------------------------------- HTML


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


@pages.get("/review/login")
def login_form(book: str = "", signed_in: bool = False) -> Response:
    """The sign-in form: a token from F5_GATEWAY_TOKENS, and the book to open."""
    return review_page.login(book if _valid_book(book) else "", "Signed in: name a book." if signed_in else None)


def _valid_book(book: str) -> bool:
    return bool(re.match(BOOK, book))


@pages.post("/review/login")
async def login(request: Request) -> Response:
    """Check the token and give the session cookie (HttpOnly, SameSite=Strict, Secure over https). Cross-site posts
    are refused (Fetch Metadata), so no other site can sign a browser in with its own token; every attempt counts
    against one rate bucket, so tokens cannot be guessed quickly."""
    if request.headers.get("sec-fetch-site") in ("cross-site", "same-site"):
        raise ApiError(403, "cross_site", "sign in from the gateway's own login page")
    request.app.state.rate_limit.take(LOGIN_BUCKET)
    form = parse_qs((await request.body())[:4096].decode("utf-8", "replace"), max_num_fields=4)
    token, book = (form.get("token") or [""])[0], (form.get("book") or [""])[0]
    book = book if _valid_book(book) else ""
    try:
        index = request.app.state.auth.check(Bearer(scheme="Bearer", credentials=token))
    except HTTPException:
        return review_page.login(book, "That token is not one of this gateway's.", 401)
    target = f"/review/{book}" if book else "/review/login?signed_in=1"
    response = RedirectResponse(target, 303)
    sessions = request.app.state.sessions
    if index >= 0:
        response.set_cookie(SESSION_COOKIE, sessions.issue(index), max_age=sessions.ttl_s, path="/", httponly=True,
                            samesite="strict", secure=_secure(request))
    return response


@pages.post("/review/logout")
def logout(request: Request) -> Response:
    """End the session in this browser (the cookie is dropped)."""
    response = RedirectResponse("/review/login", 303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=_secure(request))
    return response


@pages.get("/review/{book}")
def page(request: Request, book: BookName, ctx: Context, credentials: Credentials, cookie: Cookie) -> Response:
    """The review page of a book; without a session, the sign-in form (for this book) instead."""
    caller = _identify(request, credentials, cookie)
    if caller is None:
        return RedirectResponse(f"/review/login?book={book}", 303)
    request.app.state.rate_limit.take(caller.index)
    listing = review_list(ctx, book)
    csrf = request.app.state.sessions.csrf(caller.index, caller.session or "")
    return review_page.review(listing, csrf)
