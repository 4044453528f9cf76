"""Emotion names shared by the bot and the training pipeline: Korean names and aliases."""

from __future__ import annotations

# The AIHub dataset's folder names (the first six) and our choice for the other three.
KOREAN_NAMES: dict[str, str] = {
    "happy": "기쁨",
    "sad": "슬픔",
    "angry": "분노",
    "anxious": "불안",
    "hurt": "상처",
    "neutral": "중립",
    "fear": "공포",
    "disgust": "혐오",
    "surprise": "놀람",
}

# Names seen in public emotion datasets and in what people type -> our label names.
ALIASES: dict[str, str] = {
    "anger": "angry",
    "sadness": "sad",
    "happiness": "happy",
    "joy": "happy",
    "surprised": "surprise",
    "fearful": "fear",
    "scared": "fear",
    "afraid": "fear",
    "disgusted": "disgust",
    "anxiety": "anxious",
    "neutrality": "neutral",
}
