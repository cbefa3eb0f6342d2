"""Small real models (Flax linen / nnx, Equinox, optax) that shardsearch must plan well.

``CASES`` maps a model name to a function returning its ``ModelCase``.
"""

from models import bert, eqx_transformer, gpt, mixtral, moe, resnet, vit

CASES = {
    "gpt": gpt.make,
    "bert": bert.make,
    "resnet": resnet.make,
    "vit": vit.make,
    "moe": moe.make,
    "mixtral": mixtral.make,
    "gpt_scan": lambda: gpt.make(scan=True),
    "equinox": eqx_transformer.make,
}
