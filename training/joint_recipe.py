"""The settings of `moodbot train-joint`, apart from the training code (no Keras import)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ml.labels import FER_LABELS
from training.options import knob

# FER's seven, then the AIHub labels FER lacks. The order is the model's output order.
UNION_LABELS = (*FER_LABELS, "anxious", "hurt", "embarrassed")
# What epoch selection (and calibration) can maximise: the vals' mean or pooled accuracy.
SELECTIONS = ("mean", "pooled")
# compact: our residual CNN, new or from --init-from; faceapi: face-api.js's pretrained
# expression network (training/faceapi.py), which takes 112x112 faces.
BACKBONES = ("compact", "faceapi")
FACEAPI_SIDE = 112


@dataclass(frozen=True)
class JointRecipe:
    """Every choice that shapes a jointly trained model; written into its model card."""

    # A field made with knob() is also an option of `moodbot train-joint` (training/options.py).
    input_size: int = knob(48, "Side of the input (an --init-from bundle is adapted to it).")
    color: str = knob("grayscale", "grayscale or rgb input (a grey --init-from bundle is adapted).")
    backbone: str = knob(
        "compact",
        "compact (ours, new or --init-from) or faceapi (face-api.js's pretrained expression "
        "network; needs --input-size 112).",
    )
    width: int = knob(56, "Channels of the first stage (a new model's).")
    epochs: int = knob(12, "Epochs: the cosine schedule's length.")
    batch_size: int = knob(64, "Faces per training step.")
    learning_rate: float = knob(5e-4, "Peak of the warm-up + cosine schedule.")
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.5
    label_smoothing: float = knob(0.1, "Share of a face's target spread over its other labels.")
    erasing: float = knob(0.25, "Share of faces with a random rectangle erased.")
    union_weight: float = knob(
        0.25, "0: each face's loss over its own dataset's labels; 1: over every label."
    )
    # Faces drawn from each dataset per epoch, by dataset folder name; others take all.
    per_epoch: dict[str, int] = field(default_factory=dict)
    # Share of each named dataset's training target that is the initial model's own answer
    # (distillation: fine-tuning for new faces without forgetting what it knew about FER).
    distill: dict[str, float] = field(default_factory=dict)
    # Selection floors by dataset: epochs whose val accuracy reaches every floor win over
    # those that do not; `select_by` decides within each group.
    floor: dict[str, float] = field(default_factory=dict)
    # Pooled by default: a mean of accuracies lets SFEW's 145 val faces outvote 4,948 Korean ones.
    select_by: str = knob(
        "pooled",
        "Epoch selection: mean (of the vals' accuracies) or pooled (over all their images).",
        option="--select",
    )
    average_epochs: int = knob(
        0,
        "Also average the weights of the schedule's last N epochs (fresh batch-norm "
        "statistics) and keep the average when it ranks above the selected epoch.",
    )
    time_limit_minutes: float | None = knob(
        None, "Minutes of training epochs; the bundle is still written.", option="--time-limit"
    )
    seed: int = knob(
        1337, "Random seed of the initialisation and the draws.", envvar="MOODBOT_SEED"
    )
    name: str = knob("moodnet-joint", "Model name in the bundle.")

    def __post_init__(self) -> None:
        if not 0.0 <= self.union_weight <= 1.0:
            raise ValueError(f"union_weight must be within 0..1, got {self.union_weight!r}")
        if self.select_by not in SELECTIONS:
            raise ValueError(f"select must be mean or pooled, got {self.select_by!r}")
        if self.color not in ("grayscale", "rgb"):
            raise ValueError(f"color must be grayscale or rgb, got {self.color!r}")
        if self.backbone not in BACKBONES:
            raise ValueError(
                f"backbone must be one of {', '.join(BACKBONES)}, got {self.backbone!r}"
            )
        if self.backbone == "faceapi" and self.input_size != FACEAPI_SIDE:
            raise ValueError(
                f"the faceapi backbone takes {FACEAPI_SIDE}x{FACEAPI_SIDE} faces: "
                f"give --input-size {FACEAPI_SIDE}"
            )
        if self.epochs < 1 or self.batch_size < 1 or self.learning_rate <= 0:
            raise ValueError("epochs, batch_size and learning_rate must be positive")
        if self.average_epochs < 0:
            raise ValueError(f"average_epochs must be >= 0, got {self.average_epochs!r}")
        if any(n < 1 for n in self.per_epoch.values()):
            raise ValueError(f"per_epoch counts must be >= 1, got {self.per_epoch}")
        for name, shares in (("distill", self.distill), ("floor", self.floor)):
            if any(not 0.0 <= v <= 1.0 for v in shares.values()):
                raise ValueError(f"{name} values must be within 0..1, got {shares}")
