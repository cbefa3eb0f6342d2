"""Wide-ResNet on NHWC images, following Alpa's benchmark model (a ResNet-v1 whose
bottleneck 3x3 conv is `width_factor` times wider), with Alpa's WResNet table.

Batch norm uses the batch statistics computed in the step (training mode) and keeps no
running averages, so the train step has no extra state. Conv kernels are HWIO.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from benchmarks.models._common import Spec, build_workload, cross_entropy, init_from_specs

KERNEL_AXES = (None, None, "conv_in", "conv_out")


@dataclasses.dataclass(frozen=True)
class WResNetConfig:
    name: str
    stage_sizes: tuple  # blocks per stage; stage i has filters * 2**i channels
    filters: int  # base channels
    width_factor: int
    bottleneck: bool = True
    image_size: int = 224
    num_classes: int = 1024
    batch: int = 32
    dtype: str = "float32"


_RESNET50 = (3, 4, 6, 3)

CONFIGS = {
    c.name: c
    for c in [
        WResNetConfig("wresnet-tiny", (1, 1, 1, 1), 16, 2, image_size=32, num_classes=10, batch=16),
        WResNetConfig(
            "wresnet-small", (2, 2, 2, 2), 32, 2, image_size=64, num_classes=100, batch=16
        ),
        # GPU-target rows (compiled for the cluster's GPUs, never run here)
        WResNetConfig("wresnet-medium-bf16", (2, 2, 2, 2), 64, 2, image_size=224, batch=64, dtype="bfloat16"),
        # Alpa WResNet table: 50 layers, image 224, 1024 classes
        WResNetConfig("wresnet-250M", _RESNET50, 160, 2),
        WResNetConfig("wresnet-500M", _RESNET50, 224, 2),
        WResNetConfig("wresnet-1B", _RESNET50, 320, 2),
        WResNetConfig("wresnet-2B", _RESNET50, 448, 2),
        WResNetConfig("wresnet-4B", _RESNET50, 640, 2),
        WResNetConfig("wresnet-6.8B", _RESNET50, 320, 16),
        WResNetConfig("wresnet-13B", _RESNET50, 320, 32),
    ]
}


def conv_spec(k: int, cin: int, cout: int, init: str = "normal") -> Spec:
    return Spec((k, k, cin, cout), KERNEL_AXES, init, scale=math.sqrt(2.0 / (k * k * cin)))


def bn_specs(c: int, last: bool = False) -> dict:
    # the last norm of a residual branch starts at zero so each block starts as identity
    return {
        "scale": Spec((c,), ("conv_out",), "zeros" if last else "ones"),
        "bias": Spec((c,), ("conv_out",), "zeros"),
    }


def block_specs(cin: int, f: int, w: int, bottleneck: bool, stride: int) -> dict:
    if bottleneck:  # 1x1 cin->f, 3x3 f->f*w, 1x1 f*w->4f
        cout = 4 * f
        p = {
            "conv1": conv_spec(1, cin, f), "bn1": bn_specs(f),
            "conv2": conv_spec(3, f, f * w), "bn2": bn_specs(f * w),
            "conv3": conv_spec(1, f * w, cout), "bn3": bn_specs(cout, last=True),
        }  # fmt: skip
    else:  # 3x3 cin->f*w, 3x3 f*w->f
        cout = f
        p = {
            "conv1": conv_spec(3, cin, f * w), "bn1": bn_specs(f * w),
            "conv2": conv_spec(3, f * w, cout), "bn2": bn_specs(cout, last=True),
        }  # fmt: skip
    if cin != cout or stride != 1:
        p["proj"] = conv_spec(1, cin, cout)
        p["bn_proj"] = bn_specs(cout)
    return p


def layout(cfg: WResNetConfig):
    """(input channels, filters, stride) of every block, in order."""
    out, cin = [], cfg.filters
    for i, n in enumerate(cfg.stage_sizes):
        f = cfg.filters * 2**i
        for j in range(n):
            out.append((cin, f, 2 if i > 0 and j == 0 else 1))
            cin = 4 * f if cfg.bottleneck else f
    return out, cin


def param_specs(cfg: WResNetConfig) -> dict:
    blocks, c_last = layout(cfg)
    return {
        "stem": {"conv": conv_spec(7, 3, cfg.filters), "bn": bn_specs(cfg.filters)},
        "blocks": [
            block_specs(cin, f, cfg.width_factor, cfg.bottleneck, s) for cin, f, s in blocks
        ],
        # the classifier's input is the last conv's channels: a 1x1 conv on the pooled map
        "head": {
            "w": Spec((c_last, cfg.num_classes), ("conv_in", "classes"), scale=0.01),
            "b": Spec((cfg.num_classes,), ("classes",), "zeros"),
        },
    }


def batch_specs(cfg: WResNetConfig) -> dict:
    i = cfg.image_size
    return {
        "images": Spec((cfg.batch, i, i, 3), ("batch", "height", "width", None)),
        "labels": Spec((cfg.batch,), ("batch",), dtype="int32"),
    }


def conv(x, w, stride=1, padding="SAME"):
    return jax.lax.conv_general_dilated(
        x, w, (stride, stride), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def batch_norm(p, x, eps=1e-5):
    x32 = x.astype(jnp.float32)  # statistics in float32 for bf16 configs
    mean = x32.mean(axis=(0, 1, 2))
    var = ((x32 - mean) ** 2).mean(axis=(0, 1, 2))
    return ((x32 - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype) * p["scale"] + p["bias"]


def block(p, x, stride: int, bottleneck: bool):
    if bottleneck:
        y = jax.nn.relu(batch_norm(p["bn1"], conv(x, p["conv1"])))
        y = jax.nn.relu(batch_norm(p["bn2"], conv(y, p["conv2"], stride)))
        y = batch_norm(p["bn3"], conv(y, p["conv3"]))
    else:
        y = jax.nn.relu(batch_norm(p["bn1"], conv(x, p["conv1"], stride)))
        y = batch_norm(p["bn2"], conv(y, p["conv2"]))
    if "proj" in p:
        x = batch_norm(p["bn_proj"], conv(x, p["proj"], stride))
    return jax.nn.relu(x + y)


def forward(params, images, cfg: WResNetConfig):
    x = conv(images.astype(cfg.dtype), params["stem"]["conv"], 2, ((3, 3), (3, 3)))
    x = jax.nn.relu(batch_norm(params["stem"]["bn"], x))
    x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "SAME")
    for p, (_, _, stride) in zip(params["blocks"], layout(cfg)[0]):
        x = block(p, x, stride, cfg.bottleneck)
    x = x.mean(axis=(1, 2))  # global average pool
    return x @ params["head"]["w"] + params["head"]["b"]


def loss_fn(cfg: WResNetConfig):
    def loss(params, batch):
        return cross_entropy(forward(params, batch["images"], cfg), batch["labels"]).mean()

    return loss


def init_params(cfg: WResNetConfig, key):
    return init_from_specs(param_specs(cfg), key, cfg.dtype)


def make_batch(cfg: WResNetConfig, key):
    k1, k2 = jax.random.split(key)
    i = cfg.image_size
    return {
        "images": jax.random.normal(k1, (cfg.batch, i, i, 3), jnp.float32).astype(cfg.dtype),
        "labels": jax.random.randint(k2, (cfg.batch,), 0, cfg.num_classes, jnp.int32),
    }


def make_workload(cfg: WResNetConfig, optimizer=None):
    specs = param_specs(cfg)
    n = len(specs["blocks"])
    return build_workload(cfg.name, cfg, specs, batch_specs(cfg), loss_fn(cfg), optimizer, n)
