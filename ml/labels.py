"""The one table of the moods moodbot knows: names, Korean names, emoji, chart place and colour.

Everything that shows or reads a mood (texts, music, the chart, the web page, dataset readers,
training) takes it from here, so a new label is one row. A stored label that is not in the table
(an old database, a model with other classes) is still shown: under its own name, with no emoji
and a spare chart colour.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Label:
    """One mood: how it is named, drawn and found."""

    name: str
    korean: str
    emoji: str
    color: str  # its colour in the /history chart
    aliases: tuple[str, ...] = ()  # names in public datasets and in what people type
    read_from_faces: bool = True  # False for music-only moods (the calm mode's "calm")


# In the order the product lists emotions: the seed's six (AIHub's folders), FER's other three,
# then AIHub's seventh (당황). "calm" is a music mood only, never read from a face.
LABELS: tuple[Label, ...] = (
    Label("happy", "기쁨", "😄", "#f2b701", ("happiness", "joy")),
    Label("sad", "슬픔", "😢", "#4e79a7", ("sadness",)),
    Label("angry", "분노", "😠", "#e15759", ("anger",)),
    Label("anxious", "불안", "😟", "#9c755f", ("anxiety",)),
    Label("hurt", "상처", "🤕", "#b07aa1"),
    Label("neutral", "중립", "😐", "#9da5ae", ("neutrality",)),
    Label("fear", "공포", "😨", "#6b4c9a", ("fearful", "scared", "afraid")),
    Label("disgust", "혐오", "🤢", "#7f9a3c", ("disgusted",)),
    Label("surprise", "놀람", "😮", "#f28e2b", ("surprised",)),
    Label("embarrassed", "당황", "😳", "#ff9da7", ("embarrassment", "flustered")),
    Label("calm", "평온", "😌", "#59a89c", read_from_faces=False),
)

# The /history chart's rows, top to bottom: pleasant and energetic first, then low, then tense,
# then hostile.
CHART_ORDER: tuple[str, ...] = (
    "happy",
    "surprise",
    "neutral",
    "calm",
    "sad",
    "hurt",
    "embarrassed",
    "anxious",
    "fear",
    "angry",
    "disgust",
)

BY_NAME: dict[str, Label] = {label.name: label for label in LABELS}
# Emotions a model may read from a face, in product order.
EMOTIONS: tuple[str, ...] = tuple(label.name for label in LABELS if label.read_from_faces)
# Moods music can be chosen for: every emotion, and the calm mode's "calm".
MUSIC_MOODS: tuple[str, ...] = tuple(label.name for label in LABELS)
# Korean names of the emotions (the AIHub dataset's folder names) ...
KOREAN_NAMES: dict[str, str] = {name: BY_NAME[name].korean for name in EMOTIONS}
# ... and of every mood, "calm" included, for showing them.
MOOD_KOREAN_NAMES: dict[str, str] = {label.name: label.korean for label in LABELS}
EMOJI: dict[str, str] = {label.name: label.emoji for label in LABELS}
CHART_COLORS: dict[str, str] = {label.name: label.color for label in LABELS}
# Names seen in public emotion datasets and in what people type -> our emotion names.
ALIASES: dict[str, str] = {
    alias: label.name for label in LABELS if label.read_from_faces for alias in label.aliases
}

# How the music relates to the mood: matches it, lifts it, or calms it (bot/music.py says which
# music mood each emotion gets in each mode).
MODES: tuple[str, ...] = ("match", "lift", "calm")

# The classes of FER2013 in its own index order: the output order of every FER-trained model.
FER_LABELS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def emotion_for(name: object) -> str | None:
    """The emotion an English, Korean or alias name means (any case and spacing), or None."""
    if not isinstance(name, str):
        return None
    key = name.strip().lower()
    return _LOOKUP.get(key)


_LOOKUP: dict[str, str] = {
    **{name: name for name in EMOTIONS},
    **{korean: name for name, korean in KOREAN_NAMES.items()},
    **ALIASES,
}
