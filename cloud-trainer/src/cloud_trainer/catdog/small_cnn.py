"""The from-scratch option: a small separable-convolution CNN sized for edge CPUs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import keras

EMBEDDING_DIM = 128
# A few hundred photos make ~16 steps per epoch: with Keras' default 0.99 the moving statistics
# would still be mostly their initial values after many epochs, and inference (which uses
# them) would saturate every ReLU6 and answer the same for every frame.
BN_MOMENTUM = 0.9
# (filters, stride) of each separable block after the stem; about 61 k parameters in all.
BLOCKS = ((32, 1), (64, 2), (64, 1), (96, 2), (96, 1), (128, 2), (EMBEDDING_DIM, 1))


def _block(x: Any, filters: int, stride: int, name: str) -> Any:
    from keras import layers

    x = layers.DepthwiseConv2D(3, stride, padding="same", use_bias=False, name=f"{name}_dw")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_dw_bn")(x)
    x = layers.ReLU(6.0, name=f"{name}_dw_relu")(x)
    x = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_pw")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_pw_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_pw_relu")(x)


def build_small_cnn(size: int, n_classes: int, dropout: float = 0.3) -> keras.Model:
    """Input: (N, size, size, 3) RGB 0-255; outputs: probabilities and a pooled embedding."""
    import keras
    from keras import layers

    inputs = keras.Input((size, size, 3), name="image")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="normalise")(inputs)
    x = layers.Conv2D(24, 3, 2, padding="same", use_bias=False, name="stem_conv")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu")(x)
    for i, (filters, stride) in enumerate(BLOCKS):
        x = _block(x, filters, stride, f"block{i}")
    embedding = layers.GlobalAveragePooling2D(name="embedding")(x)
    x = layers.Dropout(dropout, name="dropout")(embedding)
    logits = layers.Dense(n_classes, name="logits")(x)
    probabilities = layers.Softmax(name="probabilities")(logits)
    return keras.Model(inputs, [probabilities, embedding], name="catdog_small_cnn")
