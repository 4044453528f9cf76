"""The one face pipeline: bytes -> upright RGB (decode) -> faces (detect) -> crops (frame).

The bot (ml/engine.py), evaluation (training/evaluate.py) and training data
(training/preprocess.py) all cut faces out of photos through it, so what is measured and what
is learnt from is what the bot serves. `ml.engine.serving_pipeline` builds the bot's own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ml.decode import DecodedImage, DecodeLimits, decode_image
from ml.faces import CROP_MARGIN, Face, FaceDetector, crop_face


@dataclass(frozen=True)
class Framing:
    """How a face is cut out of its photo."""

    margin: float = CROP_MARGIN  # of the face's size, added on each side
    level: bool = True  # rotate so the eyes sit on a horizontal line
    max_side: int | None = None  # shrink larger crops to this side (None: keep every pixel)


@dataclass(frozen=True)
class FoundFaces:
    """A decoded photo and the faces found on it, largest first, in its pixel coordinates."""

    image: DecodedImage
    faces: list[Face]

    def largest(self) -> FoundFaces:
        """Only the largest face: the one a selfie, or a dataset image, is about."""
        return FoundFaces(self.image, self.faces[:1])


@dataclass(frozen=True)
class FacePipeline:
    """Decode, detect and crop with one set of limits; each step can also run on its own.

    Without a detector it only decodes (evaluation of already aligned faces).
    """

    detector: FaceDetector | None
    limits: DecodeLimits = field(default_factory=DecodeLimits)
    max_faces: int = 20
    framing: Framing = field(default_factory=Framing)

    def decode(self, data: bytes) -> DecodedImage:
        """UnreadableImage or ImageTooLarge for what cannot be used (ml.decode)."""
        return decode_image(data, self.limits)

    def find(self, image: DecodedImage) -> FoundFaces:
        if self.detector is None:
            raise ValueError("This pipeline only decodes: it has no face detector.")
        return FoundFaces(image, self.detector.detect(image.pixels)[: self.max_faces])

    def crop(self, found: FoundFaces, framing: Framing | None = None) -> list[np.ndarray]:
        """A crop of every face found, framed as this pipeline frames them unless told."""
        frame = framing or self.framing
        return [
            crop_face(
                found.image.pixels,
                face,
                margin=frame.margin,
                level=frame.level,
                max_side=frame.max_side,
            )
            for face in found.faces
        ]

    def run(self, data: bytes) -> tuple[FoundFaces, list[np.ndarray]]:
        """All three steps: the photo, its faces and their crops."""
        found = self.find(self.decode(data))
        return found, self.crop(found)
