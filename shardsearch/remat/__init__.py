"""Rematerialization chosen by the search: which forward layers recompute their residuals
in the backward pass, with which ``jax.checkpoint`` policy (``layers``: finding them;
``rewrite``: the step rewritten to recompute them)."""

from __future__ import annotations

from shardsearch.remat.layers import ForwardLayers as ForwardLayers
from shardsearch.remat.layers import Layer as Layer
from shardsearch.remat.layers import forward_layers as forward_layers
from shardsearch.remat.rewrite import POLICIES as POLICIES
from shardsearch.remat.rewrite import RematPlan as RematPlan
from shardsearch.remat.rewrite import choices as choices
from shardsearch.remat.rewrite import remat_graph as remat_graph
