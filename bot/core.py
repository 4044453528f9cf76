"""The use cases every transport shares: analyse a selfie, correct it, history, group mix, forget,
preferences.

Nothing here knows about Telegram, Discord or the console: transports build a `Sender`,
call one method, and render the `Reply` they get back.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Concatenate, ParamSpec, Protocol

from bot import texts
from bot.chart import render_mood_chart
from bot.correction import CorrectionOffer, Ref, RefSigner
from bot.history import History, HistoryUnavailable, MoodEntry
from bot.moodspace import Target, blend, recency_weight, target_for
from bot.music import MusicRecommender, MusicSuggestion, Recommendation
from bot.picker import UnknownGenre
from bot.ratelimit import Limiter
from bot.texts import emotion_name, percent, say, sound_name
from ml.engine import Analysis, EmotionEngine, FaceEmotion
from ml.errors import EngineBusy, ErrorCode, ImageTooLarge, MLError, UnreadableImage
from ml.labels import EMOJI, EMOTIONS, MODES, emotion_for

log = logging.getLogger(__name__)

MAX_GENRE_CHARS = 40
HISTORY_COUNT_DAYS = 30
DEFAULT_HISTORY = 10
MAX_HISTORY = 50  # rows that still fit one chat message
SUGGESTIONS = 3  # "Not quite?" offers the model's next most likely emotions, this many

P = ParamSpec("P")


@dataclass(frozen=True)
class Sender:
    """Who is asking, and where: the only thing a transport must tell the core."""

    platform: str
    chat_id: str
    user_id: str
    language: str = "en"
    # The platform's id of the message being answered, the same on every delivery of it
    # (Telegram's update_id): what it stores is stored once however often it is processed.
    request_id: str | None = None


@dataclass(frozen=True)
class Reply:
    """What to answer: text, music links and an optional PNG chart, plus the raw results."""

    text: str  # everything a chat shows, sentence by sentence
    links: tuple[Recommendation, ...] = ()
    chart_png: bytes | None = None
    error_code: ErrorCode | None = None
    analysis: Analysis | None = None
    music: MusicSuggestion | None = None
    # "Not quite?": the buttons a transport draws so the person can correct the mood.
    correction: CorrectionOffer | None = None

    # True when a chat transport may stay silent: a repeated "slow down" during a flood.
    mute: bool = False
    # The parts of an answer with music, for front doors that lay them out (the web page):
    # the mood that was read and the music's "why" (both also lead `text`).
    headline: str = ""
    why: str = ""

    @property
    def ok(self) -> bool:
        return self.error_code is None


@dataclass(frozen=True)
class Upload:
    """An image still on the chat platform: what it declares about itself, and how to fetch it."""

    fetch: Callable[[], Awaitable[bytes]]
    size: int | None = None  # declared size in bytes; None or 0 when the platform does not say
    mime_type: str | None = None


class DownloadFailed(Exception):
    """The photo could not be downloaded from the chat platform."""


class InFlight:
    """Counts work in progress, so that a shutdown can wait for it to finish."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextmanager
    def track(self) -> Iterator[None]:
        """Count the enclosed work as in flight."""
        self.count += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.count -= 1
            if not self.count:
                self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is in flight; False when `timeout` seconds passed first."""
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True


def history_limit(arg: str | None) -> int:
    """The n of `/history [n]`: a number from 1 to MAX_HISTORY, DEFAULT_HISTORY otherwise."""
    text = (arg or "").strip()
    # isascii(): str.isdigit() accepts "²", which int() refuses.
    digits = text.lstrip("0") if text.isascii() and text.isdigit() else ""
    if not digits:
        return DEFAULT_HISTORY
    # Compare lengths first: int() of a 5000-digit string raises (Python's digit limit).
    return MAX_HISTORY if len(digits) > 3 else min(int(digits), MAX_HISTORY)


def _use_case(
    method: Callable[Concatenate[MoodService, Sender, P], Coroutine[Any, Any, Reply]],
) -> Callable[Concatenate[MoodService, Sender, P], Coroutine[Any, Any, Reply]]:
    """Admit the call (open for work, within the user's rate) and count it while it runs."""

    @functools.wraps(method)
    async def admitted(self: MoodService, who: Sender, *args: P.args, **kwargs: P.kwargs) -> Reply:
        refusal = await self._refusal(who)
        if refusal is not None:
            return refusal
        with self.in_flight.track():
            return await method(self, who, *args, **kwargs)

    return admitted


class PhotoObserver(Protocol):
    """Sees the outcome of every photo any transport sends (metrics hook in here)."""

    def photo_done(self, who: Sender, use: str, reply: Reply, seconds: float) -> None:
        """`use` is "selfie" or "group_photo"; `seconds` is the time the core spent on it."""
        ...

    def correction_done(self, who: Sender, predicted: str, corrected: str) -> None:
        """Someone said the model's `predicted` emotion was really `corrected`."""
        ...


# Answers given before any work started: they say nothing about how long analyses take.
REFUSALS = frozenset({ErrorCode.RATE_LIMITED, ErrorCode.CLOSED})


def _observed(
    use: str,
) -> Callable[
    [Callable[Concatenate[MoodService, Sender, P], Coroutine[Any, Any, Reply]]],
    Callable[Concatenate[MoodService, Sender, P], Coroutine[Any, Any, Reply]],
]:
    """Report each photo's reply and duration to the service's observer, if it has one."""

    def decorate(
        method: Callable[Concatenate[MoodService, Sender, P], Coroutine[Any, Any, Reply]],
    ) -> Callable[Concatenate[MoodService, Sender, P], Coroutine[Any, Any, Reply]]:
        @functools.wraps(method)
        async def observed(
            self: MoodService, who: Sender, *args: P.args, **kwargs: P.kwargs
        ) -> Reply:
            started = time.perf_counter()
            reply = await method(self, who, *args, **kwargs)
            if self.observer is not None:
                try:
                    self.observer.photo_done(who, use, reply, time.perf_counter() - started)
                except Exception:
                    # Counting must never cost a user their answer.
                    log.exception("The photo observer failed")
            return reply

        return observed

    return decorate


@dataclass(frozen=True)
class MoodBlend:
    """Several moods blended into one: the leading mood, each mood's share (0..1), and the
    place in valence x energy the group's music aims at."""

    dominant: str
    shares: dict[str, float] = field(default_factory=dict)
    people: int = 0
    target: Target | None = None


def blend_moods(moods: Iterable[tuple[str, float]]) -> MoodBlend:
    """Blend (emotion, weight) pairs: weight is confidence, times recency for stored moods.

    The leading mood names the blend; the target is the weighted mean of the moods' places.
    """
    weights: Counter[str] = Counter()
    people = 0
    for emotion, weight in moods:
        weights[emotion] += max(weight, 1e-3)
        people += 1
    if not weights:
        raise ValueError("blend_moods needs at least one mood")
    total = sum(weights.values())
    shares = {e: w / total for e, w in sorted(weights.items(), key=lambda i: (-i[1], i[0]))}
    target = blend((target_for(e), w) for e, w in weights.items())
    return MoodBlend(dominant=next(iter(shares)), shares=shares, people=people, target=target)


def utc_now() -> datetime:
    return datetime.now(UTC)


def _history_down(who: Sender, exc: HistoryUnavailable) -> Reply:
    """The one reply for a database that cannot be read or written right now."""
    log.error("History unavailable: %s", exc)
    return Reply(
        text=say(who.language, "history_unavailable"), error_code=ErrorCode.HISTORY_UNAVAILABLE
    )


class MoodService:
    """The moodbot core: one engine, one music recommender, one history store."""

    def __init__(
        self,
        engine: EmotionEngine,
        music: MusicRecommender,
        history: History,
        *,
        group_window: timedelta = timedelta(hours=24),
        default_genre: str | None = None,
        clock: Callable[[], datetime] = utc_now,
        limiter: Limiter | None = None,
        observer: PhotoObserver | None = None,
        retention_days: int = 0,
        button_secret: bytes | None = None,
        correction_window: timedelta = timedelta(hours=24),
        music_memory: int = 50,
    ) -> None:
        self.engine = engine
        self.music = music
        self.history = history
        self.group_window = group_window
        self.default_genre = default_genre
        self.retention_days = retention_days  # 0: kept until /forget (bot/app.py purges)
        self.music_memory = music_memory  # tracks not offered again to the same person
        self._clock = clock
        # Chat transports share one per-user limiter; the console (one local user) needs none.
        self.limiter = limiter
        # Sees every photo from every transport (the web server's metrics set it).
        self.observer = observer
        self.accepting = True
        self.in_flight = InFlight()
        # Signs "Not quite?" buttons; without a configured secret they last one process.
        self.signer = RefSigner(button_secret)
        self.correction_window = correction_window

    # --- admission and shutdown ---------------------------------------------------------------

    async def _refusal(self, who: Sender) -> Reply | None:
        """The polite answer when this call cannot be taken now, else None."""
        verdict = None
        if self.limiter is not None and self.accepting:
            verdict = await self.limiter.acquire((who.platform, who.user_id))
        # Checked after the (possibly remote) limiter, right before the work is tracked: a
        # shutdown that began meanwhile still refuses it.
        if not self.accepting:
            return Reply(text=say(who.language, "closed"), error_code=ErrorCode.CLOSED)
        if verdict is None or verdict.allowed:
            return None
        if verdict.first_refusal:
            log.info("Rate limit reached by a %s user", who.platform)
        text = say(who.language, "rate_limited", seconds=verdict.retry_after_s)
        return Reply(text=text, error_code=ErrorCode.RATE_LIMITED, mute=not verdict.first_refusal)

    def stop_accepting(self) -> None:
        """Answer every new request with "restarting"; work already admitted goes on."""
        self.accepting = False

    async def drain(self, timeout: float) -> bool:
        """Wait for admitted work to finish; False when `timeout` seconds were not enough."""
        return await self.in_flight.wait_idle(timeout)

    @property
    def max_image_bytes(self) -> int:
        """The largest image file the engine accepts."""
        return self.engine.config.limits.max_bytes

    @property
    def ideal_image_side(self) -> int:
        """The long side (px) the face detector works at: larger photos only cost download time."""
        return self.engine.config.detect_max_side

    # --- selfies ------------------------------------------------------------------------------

    @_observed("selfie")
    @_use_case
    async def analyze_selfie(
        self, who: Sender, image: bytes | Upload, *, remember: bool = True
    ) -> Reply:
        """Read every face, find music for the main one, store it unless remember=False."""
        analysis, failure = await self._analyze(who, image)
        if failure:
            return failure
        assert analysis and analysis.primary
        face = analysis.primary
        music = await self.recommend(who, face.emotion, remember=remember)
        notes, row_id = [], None
        if not remember:
            notes.append(say(who.language, "not_saved_other"))
        elif (row_id := await self._record(who, face, len(analysis.faces))) is None:
            notes.append(say(who.language, "history_unsaved"))
        headline = self._describe_faces(who.language, analysis.faces)
        return self._music_reply(
            who,
            headline,
            music,
            *notes,
            analysis=analysis,
            correction=self._offer(who, row_id, face),
        )

    @_observed("group_photo")
    @_use_case
    async def group_photo_mix(self, who: Sender, image: bytes | Upload) -> Reply:
        """One suggestion for everybody in a group photo (nothing is stored)."""
        analysis, failure = await self._analyze(who, image)
        if failure:
            return failure
        assert analysis
        # One photo: everybody's mood is equally recent; confidence alone weighs them.
        blend = blend_moods((f.emotion, f.confidence) for f in analysis.faces)
        return await self._blend_reply(who, blend, "group_photo_title", analysis)

    async def _analyze(
        self, who: Sender, image: bytes | Upload
    ) -> tuple[Analysis | None, Reply | None]:
        try:
            data = await self._download(image) if isinstance(image, Upload) else image
            analysis = await self.engine.analyze(data)
        except MLError as exc:
            return None, self._ml_error(who, exc)
        except DownloadFailed as exc:
            log.warning("Download from %s failed: %s", who.platform, exc)
            return None, Reply(
                text=say(who.language, "download_failed"), error_code=ErrorCode.DOWNLOAD_FAILED
            )
        if not analysis.faces:
            return None, Reply(text=say(who.language, "no_face"), error_code=ErrorCode.NO_FACE)
        return analysis, None

    async def _download(self, upload: Upload) -> bytes:
        """Fetch an upload, after refusing what could never be analysed without fetching it."""
        mime = (upload.mime_type or "").lower()
        # application/octet-stream says nothing: let the decoder judge those bytes.
        if mime and mime != "application/octet-stream" and not mime.startswith("image/"):
            raise UnreadableImage(f"{upload.mime_type} is not an image type.")
        limit = self.max_image_bytes
        if upload.size and upload.size > limit:
            raise ImageTooLarge(
                f"The file is {upload.size / 1e6:.1f} MB; the limit is {limit / 1e6:.1f} MB."
            )
        if self.engine.queue_depth >= self.engine.config.queue_size:
            raise EngineBusy()  # no download for a photo that could not be queued anyway
        return await upload.fetch()

    def _ml_error(self, who: Sender, exc: MLError) -> Reply:
        """The one place that turns an engine failure into a kind reply."""
        code = exc.code if exc.code in texts.MESSAGES["en"] else "error"
        if code == "error":
            log.error("Analysis failed for a %s user: %s", who.platform, exc)
        return Reply(text=say(who.language, code, detail=exc.message), error_code=exc.code)

    async def _record(self, who: Sender, face: FaceEmotion, face_count: int) -> int | None:
        """Store the mood; its row id, or None when the history could not take it."""
        entry = MoodEntry(
            platform=who.platform,
            chat_id=who.chat_id,
            user_id=who.user_id,
            emotion=face.emotion,
            confidence=round(face.confidence, 4),
            face_count=face_count,
            created_at=self._clock(),
            request_id=who.request_id,
        )
        try:
            return await self.history.record(entry)
        except HistoryUnavailable as exc:
            log.error("Could not save a mood: %s", exc)
            return None

    # --- "Not quite?": corrections ------------------------------------------------------------

    def _offer(self, who: Sender, row_id: int | None, face: FaceEmotion) -> CorrectionOffer:
        """The correction buttons for a fresh analysis: its next most likely emotions first."""
        ref = self.signer.sign(who.platform, who.user_id, row_id, self._clock())
        others = [e for e, _ in face.ranked() if e != face.emotion and e in EMOTIONS]
        return CorrectionOffer(ref, face.emotion, tuple(others[:SUGGESTIONS]), EMOTIONS)

    def can_correct(self, who: Sender, ref: str) -> bool:
        """Whether `ref` was signed for this person and is still within the window."""
        verified = self.signer.verify(who.platform, who.user_id, ref)
        return verified is not None and self._clock() - verified.issued_at <= self.correction_window

    @_use_case
    async def correct(self, who: Sender, ref: str, choice: str) -> Reply:
        """Replace the mood of an analysis by the one its owner chose, and pick music again.

        A stored analysis is updated in place (its reading kept as `predicted`) for
        `correction_window` after it; one stored nowhere only gets new music. A ref signed for
        someone else, tampered or too old, or an unknown emotion, changes nothing.
        """
        checked = self._check_correction(who, ref, choice)
        if isinstance(checked, Reply):
            return checked
        verified, emotion = checked
        key = "corrected_music_only"
        if verified.stored:
            refusal = await self._correct_stored(who, verified.row_id, emotion)
            if refusal is not None:
                return refusal
            key = "corrected"
        # A correction of an analysis stored nowhere (the web page, someone else's photo)
        # leaves no track memory either.
        music = await self.recommend(who, emotion, remember=verified.stored)
        text = say(who.language, key, **self._mood_values(who.language, emotion))
        offer = CorrectionOffer(ref, emotion, (), EMOTIONS)
        return self._music_reply(who, text, music, correction=offer)

    def _check_correction(self, who: Sender, ref: str, choice: str) -> tuple[Ref, str] | Reply:
        """The verified ref and the chosen emotion, or the reply that refuses them."""
        # The log says only that it happened and where: no ids, refs or payloads.
        lang = who.language
        verified = self.signer.verify(who.platform, who.user_id, ref)
        if verified is None:
            log.info("Refused a correction on %s: invalid or foreign button", who.platform)
            return Reply(
                text=say(lang, "correction_invalid"), error_code=ErrorCode.CORRECTION_INVALID
            )
        emotion = emotion_for(choice)  # English, Korean or an alias
        if emotion is None:
            log.info("Refused a correction on %s: unknown emotion", who.platform)
            choices = ", ".join(emotion_name(lang, e) for e in EMOTIONS)
            return Reply(
                text=say(lang, "fix_unknown", choices=choices), error_code=ErrorCode.BAD_ARGUMENT
            )
        if self._clock() - verified.issued_at > self.correction_window:
            log.info("Refused a correction on %s: too old", who.platform)
            hours = round(self.correction_window.total_seconds() / 3600)
            text = say(lang, "correction_expired", hours=hours)
            return Reply(text=text, error_code=ErrorCode.CORRECTION_EXPIRED)
        return verified, emotion

    async def _correct_stored(self, who: Sender, row_id: int, emotion: str) -> Reply | None:
        """Update the stored row in place; a refusal when it is gone (or the DB is down)."""
        now = self._clock()
        try:
            before = await self.history.correct_mood(
                row_id,
                who.platform,
                who.user_id,
                emotion,
                since=now - self.correction_window,
                at=now,
            )
        except HistoryUnavailable as exc:
            return _history_down(who, exc)
        if before is None:
            log.info("Refused a correction on %s: the mood is gone", who.platform)
            return Reply(
                text=say(who.language, "correction_gone"), error_code=ErrorCode.CORRECTION_GONE
            )
        self._count_correction(who, before.predicted or before.emotion, before.emotion, emotion)
        return None

    def _count_correction(self, who: Sender, predicted: str, before: str, after: str) -> None:
        if after in (before, predicted) or self.observer is None:
            return  # nothing changed, or back to what the model read
        try:
            self.observer.correction_done(who, predicted, after)
        except Exception:
            log.exception("The correction observer failed")

    @staticmethod
    def _mood_values(lang: str, emotion: str) -> dict[str, str]:
        return {"emotion": emotion_name(lang, emotion), "emoji": EMOJI.get(emotion, "")}

    # --- music --------------------------------------------------------------------------------

    async def recommend(
        self, who: Sender, emotion: str, *, remember: bool = True
    ) -> MusicSuggestion:
        """Music for `emotion` in this person's mode and genre, none they heard lately.

        With remember=True the tracks are noted, so the next answers bring others.
        """
        mode, genre = "match", self.default_genre
        heard: list[str] = []
        try:
            prefs = await self.history.get_preferences(who.platform, who.user_id)
            mode, genre = prefs.mode, prefs.genre or self.default_genre
            if remember and self.music_memory:
                heard = await self.history.recent_track_ids(
                    who.platform, who.user_id, self.music_memory
                )
        except HistoryUnavailable as exc:
            log.warning("Preferences unavailable, using defaults: %s", exc)
        try:
            music = await self.music.suggest(emotion, mode=mode, genre=genre, exclude_ids=heard)
        except UnknownGenre:
            # A genre saved before genres were checked against the catalogue: leave it out.
            music = await self.music.suggest(emotion, mode=mode, exclude_ids=heard)
        if remember and self.music_memory and music.track_ids:
            try:
                await self.history.remember_tracks(
                    who.platform, who.user_id, music.track_ids, self._clock()
                )
            except HistoryUnavailable as exc:
                log.warning("Could not remember the tracks offered: %s", exc)
        return music

    def _music_reply(
        self,
        who: Sender,
        headline: str,
        music: MusicSuggestion,
        *notes: str,
        group: bool = False,
        **fields: Any,
    ) -> Reply:
        """An answer with music: the headline, why this music, then any notes, one a line."""
        why = self._why(who, music, group=group)
        return Reply(
            text="\n".join([headline, why, *notes]),
            links=music.recommendations,
            music=music,
            headline=headline,
            why=why,
            **fields,
        )

    def _why(self, who: Sender, music: MusicSuggestion, *, group: bool = False) -> str:
        """One line: which mood, where its songs sit in valence x energy, and why these."""
        lang = who.language
        (v_low, v_high), (e_low, e_high) = music.target.around()
        values = {
            "emotion": emotion_name(lang, music.emotion),
            "sound": sound_name(lang, music.sound),
            "genre": f"{music.genre} " if music.genre else "",
            "valence": f"{v_low:g}-{v_high:g}",
            "energy": f"{e_low:g}-{e_high:g}",
        }
        text = say(lang, "why_group" if group else f"why_{music.mode}", **values)
        if music.widened:
            text += say(lang, "why_widened", genre=values["genre"])
        return text

    # --- describing faces ---------------------------------------------------------------------

    def _describe_faces(self, lang: str, faces: tuple[FaceEmotion, ...]) -> str:
        if len(faces) == 1:
            face = faces[0]
            if face.unsure:
                (first, p1), (second, p2) = face.ranked()[:2]
                return say(
                    lang,
                    "unsure",
                    first=self._label(lang, first),
                    p1=percent(p1),
                    second=self._label(lang, second),
                    p2=percent(p2),
                )
            return say(
                lang,
                "one_face",
                emotion=emotion_name(lang, face.emotion),
                emoji=EMOJI.get(face.emotion, ""),
                confidence=percent(face.confidence),
            )
        items = ", ".join(self._face_item(lang, f) for f in faces)
        return say(lang, "many_faces", count=len(faces), faces=items)

    def _face_item(self, lang: str, face: FaceEmotion) -> str:
        mark = "?" if face.unsure else ""
        return say(
            lang,
            "face_item",
            emotion=emotion_name(lang, face.emotion) + mark,
            emoji=EMOJI.get(face.emotion, ""),
            confidence=percent(face.confidence),
        )

    @staticmethod
    def _label(lang: str, emotion: str) -> str:
        return f"{emotion_name(lang, emotion)} {EMOJI.get(emotion, '')}".strip()

    # --- history ------------------------------------------------------------------------------

    @_use_case
    async def show_history(self, who: Sender, limit: int = DEFAULT_HISTORY) -> Reply:
        """The user's recent moods as text, with a chart of them over time."""
        lang = who.language
        since = self._clock() - timedelta(days=HISTORY_COUNT_DAYS)
        try:
            entries = await self.history.recent(who.platform, who.user_id, limit=limit)
            counts = await self.history.mood_counts(who.platform, who.user_id, since=since)
        except HistoryUnavailable as exc:
            return _history_down(who, exc)
        if not entries:
            return Reply(text=say(lang, "history_empty"))
        rows = [self._history_row(lang, e) for e in entries]
        summary = ", ".join(f"{self._label(lang, e)} × {n}" for e, n in counts.items())
        lines = [say(lang, "history_title", count=len(entries)), *rows]
        lines.append(say(lang, "history_counts", days=HISTORY_COUNT_DAYS, counts=summary))
        chart = await asyncio.to_thread(render_mood_chart, entries, lang=lang)
        return Reply(text="\n".join(lines), chart_png=chart)

    def _history_row(self, lang: str, entry: MoodEntry) -> str:
        # A corrected mood is the person's word: the model's confidence is not about it.
        return say(
            lang,
            "history_row_corrected" if entry.corrected else "history_row",
            when=entry.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            confidence=percent(entry.confidence),
            **self._mood_values(lang, entry.emotion),
        )

    # --- group mix ----------------------------------------------------------------------------

    @_use_case
    async def group_mix(self, who: Sender) -> Reply:
        """One suggestion for a chat, blended from its members' latest moods in the window."""
        lang = who.language
        since = self._clock() - self.group_window
        try:
            latest = await self.history.chat_latest_moods(who.platform, who.chat_id, since=since)
        except HistoryUnavailable as exc:
            return _history_down(who, exc)
        if not latest:
            hours = round(self.group_window.total_seconds() / 3600)
            return Reply(
                text=say(lang, "group_empty", hours=hours), error_code=ErrorCode.GROUP_EMPTY
            )
        now = self._clock()
        blend = blend_moods(
            (e.emotion, e.confidence * recency_weight((now - e.created_at).total_seconds() / 3600))
            for e in latest.values()
        )
        return await self._blend_reply(who, blend, "group_title")

    async def _blend_reply(
        self, who: Sender, blend: MoodBlend, title: str, analysis: Analysis | None = None
    ) -> Reply:
        lang = who.language
        music = await self.music.suggest(
            blend.dominant, genre=self.default_genre, target=blend.target
        )
        breakdown = ", ".join(
            f"{self._label(lang, e)} {percent(share)}" for e, share in blend.shares.items()
        )
        people = say(lang, "person" if blend.people == 1 else "people")
        head = say(lang, title, count=blend.people, people=people, breakdown=breakdown)
        return self._music_reply(who, head, music, group=True, analysis=analysis)

    # --- privacy and preferences --------------------------------------------------------------

    @_use_case
    async def forget(self, who: Sender) -> Reply:
        """Delete every mood and preference of this user, in every chat."""
        try:
            count = await self.history.forget_user(who.platform, who.user_id)
        except HistoryUnavailable as exc:
            return _history_down(who, exc)
        return Reply(text=say(who.language, "forgotten", count=count))

    @_use_case
    async def set_mode(self, who: Sender, mode: str) -> Reply:
        """Choose whether music matches, lifts or calms the mood."""
        mode = mode.strip().lower()
        if mode not in MODES:
            return Reply(text=say(who.language, "mode_bad"), error_code=ErrorCode.BAD_ARGUMENT)
        return await self._save_preference(who, say(who.language, "mode_set", mode=mode), mode=mode)

    @_use_case
    async def set_genre(self, who: Sender, genre: str) -> Reply:
        """Only songs of one catalogue genre from now on ('off' clears it)."""
        genre = " ".join(genre.split())
        if not genre or len(genre) > MAX_GENRE_CHARS:
            return Reply(text=say(who.language, "genre_bad"), error_code=ErrorCode.BAD_ARGUMENT)
        if genre.lower() in ("off", "none", "clear"):
            return await self._save_preference(who, say(who.language, "genre_cleared"), genre=None)
        try:
            genre = self.music.resolve_genre(genre)
        except UnknownGenre as exc:
            key = "genre_unknown" if exc.closest else "genre_unknown_no_hint"
            text = say(who.language, key, genre=genre, closest=", ".join(exc.closest))
            return Reply(text=text, error_code=ErrorCode.BAD_ARGUMENT)
        text = say(who.language, "genre_set", genre=genre)
        return await self._save_preference(who, text, genre=genre)

    async def _save_preference(self, who: Sender, text: str, **change: str | None) -> Reply:
        try:
            await self.history.set_preferences(who.platform, who.user_id, **change)
        except HistoryUnavailable as exc:
            return _history_down(who, exc)
        return Reply(text=text)

    def help(self, who: Sender) -> Reply:
        """What the bot does and what it stores, with this platform's commands."""
        key = f"help_{who.platform}"
        return Reply(text=say(who.language, key if key in texts.MESSAGES["en"] else "help"))

    def welcome(self, who: Sender) -> Reply:
        """The first message: a greeting, then the help."""
        return Reply(text=f"{say(who.language, 'welcome')}\n\n{self.help(who).text}")

    def privacy(self, who: Sender) -> Reply:
        """Exactly what is stored, for how long it counts, and how to delete it."""
        hours = round(self.group_window.total_seconds() / 3600)
        days = self.retention_days
        kept = say(who.language, "kept_days", days=days) if days else say(who.language, "kept")
        return Reply(text=say(who.language, "privacy", hours=hours, kept=kept))

    @_use_case
    async def hint(self, who: Sender) -> Reply:
        """A nudge for words without a photo; rate limited, as floods are mostly chatter."""
        return Reply(text=say(who.language, "hint"))
