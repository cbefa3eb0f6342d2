"""Error types of the cost model.

``ShardsearchError`` is the root of every error the project raises. It is defined
here, in the leaf package, so that ``cost_model`` (which must not import
``shardsearch``) can raise it too; ``shardsearch.ShardsearchError`` is this class.
"""


class ShardsearchError(Exception):
    """Something about the input was wrong; the message says what and how to fix it."""


class ClusterError(ShardsearchError):
    """A cluster description (dict, preset name or profile file) is malformed."""


class ProfileError(ShardsearchError):
    """The devices could not be profiled (mesh, sweep or measurements unusable)."""
