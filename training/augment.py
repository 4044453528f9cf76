"""Training-time augmentation for small greyscale faces: geometric jitter, erasing, mixup.

Every function works on a batch of float32 images scaled to 0..1, shaped (N, H, W, C), inside
a tf.data pipeline, so the work overlaps with the training step.
"""

from __future__ import annotations


def geometric_jitter(seed: int):
    """Mild jitter: real selfies are off-centre, tilted and at varying distances."""
    import keras

    return keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal", seed=seed),
            keras.layers.RandomRotation(0.04, fill_mode="nearest", seed=seed + 1),
            keras.layers.RandomTranslation(0.1, 0.1, fill_mode="nearest", seed=seed + 2),
            keras.layers.RandomZoom((-0.1, 0.15), fill_mode="nearest", seed=seed + 3),
            keras.layers.RandomContrast(0.3, seed=seed + 4),
        ],
        name="augment",
    )


def random_erasing(images, probability: float, *, area=(0.02, 0.2), aspect=(0.3, 3.3)):
    """Fill one random rectangle of each image (with `probability`) with uniform noise.

    Hands, hair and glasses hide parts of real faces; erasing teaches the model not to lean
    on any single region (Zhong et al., 2020).
    """
    import tensorflow as tf

    shape = tf.shape(images)
    n, height, width = shape[0], shape[1], shape[2]
    h_f, w_f = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    share = tf.random.uniform([n], *area)
    log_ratio = tf.random.uniform([n], tf.math.log(aspect[0]), tf.math.log(aspect[1]))
    ratio = tf.exp(log_ratio)
    box_h = tf.minimum(tf.sqrt(share * h_f * w_f * ratio), h_f)
    box_w = tf.minimum(tf.sqrt(share * h_f * w_f / ratio), w_f)
    top = tf.random.uniform([n]) * (h_f - box_h)
    left = tf.random.uniform([n]) * (w_f - box_w)
    rows = tf.range(h_f)[None, :, None]
    cols = tf.range(w_f)[None, None, :]
    inside = (
        (rows >= top[:, None, None])
        & (rows < (top + box_h)[:, None, None])
        & (cols >= left[:, None, None])
        & (cols < (left + box_w)[:, None, None])
    )
    chosen = tf.random.uniform([n]) < probability
    mask = tf.logical_and(inside, chosen[:, None, None])[..., None]
    return tf.where(mask, tf.random.uniform(tf.shape(images)), images)


def mixup(images, labels, weights, alpha: float):
    """Blend each example with another of the batch (Zhang et al., 2018).

    The partner is the same batch reversed (the batch is already shuffled); labels and
    sample weights are blended with the same share, which stays >= 0.5 for the example itself.
    """
    import tensorflow as tf

    n = tf.shape(images)[0]
    a = tf.random.gamma([n], alpha)
    b = tf.random.gamma([n], alpha)
    share = a / (a + b)
    share = tf.maximum(share, 1.0 - share)
    images_share = share[:, None, None, None]
    labels_share = share[:, None]
    mixed_images = images_share * images + (1.0 - images_share) * tf.reverse(images, [0])
    mixed_labels = labels_share * labels + (1.0 - labels_share) * tf.reverse(labels, [0])
    mixed_weights = share * weights + (1.0 - share) * tf.reverse(weights, [0])
    return mixed_images, mixed_labels, mixed_weights
