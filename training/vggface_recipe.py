"""The knobs of a VGG-Face training run (`moodbot train-vggface`), apart from the Keras code
so that the command line can offer them without loading Keras."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from training.options import knob
from training.vggface import ARCHITECTURES, MIN_INPUT_SIDE, Architecture

Mode = Literal["frozen", "finetune"]


@dataclass
class VGGFaceTrainConfig:
    """Every knob of a run; the defaults are the original project's.

    A field made with knob() is also an option of `moodbot train-vggface` (training/options.py).
    """

    architecture: Architecture = knob(
        "resnet50", "The VGG-Face backbone.", envvar="MOODBOT_VGGFACE_ARCH"
    )
    weights: Path | None = None  # a keras-vggface notop file; None trains from random weights
    mode: Mode = knob("frozen", "frozen: cache features, train the head; finetune: all.")
    input_size: int = knob(224, "Input side in pixels.")
    pooling: Literal["avg", "max"] | None = None
    epochs: int = knob(300, "Training epochs at most.")
    batch_size: int = knob(16, "Faces per training step.")
    learning_rate: float = knob(1e-4, "Adam's learning rate.")
    patience: int = knob(30, "Early stopping patience (epochs).")
    lr_patience: int = knob(0, "Halve the LR after N flat epochs (0: never).")
    val_split: float = knob(0.2, "Validation share of each class.")
    val_dir: Path | None = knob(None, "A separate validation set.")
    class_weights: bool = knob(True, "Balance classes in the loss.")
    flip: bool = knob(False, "Random horizontal flips (finetune).")
    seed: int = knob(1337, "Random seed of the split and initialisation.", envvar="MOODBOT_SEED")
    limit_per_class: int | None = knob(None, "At most N images a class.")
    cache_dir: Path | None = knob(
        None, "Features and checkpoints (default: OUTPUT-work).", envvar="MOODBOT_FEATURE_CACHE"
    )
    name: str = knob("", "Model name in the bundle (default: vggface-ARCH-emotion).")

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"architecture must be one of {', '.join(ARCHITECTURES)}, got {self.architecture!r}"
            )
        if self.mode not in ("frozen", "finetune"):
            raise ValueError(f"mode must be 'frozen' or 'finetune', got {self.mode!r}")
        if self.input_size < MIN_INPUT_SIDE:
            raise ValueError(f"input_size must be >= {MIN_INPUT_SIDE}, got {self.input_size!r}")
        if not 0.0 < self.val_split < 1.0 and self.val_dir is None:
            raise ValueError(f"val_split must be within (0, 1), got {self.val_split!r}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)!r}")
        self.name = self.name or f"vggface-{self.architecture}-emotion"

    def to_json(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}
