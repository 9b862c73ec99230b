"""Backdoor triggers: BadNets-1 (corner patch), BadNets-2 (blended pattern) and WaNet (smooth warp), one module
each, and the registry that finds them (:mod:`.registry`).

Every trigger is a deterministic function of (kind, image_size, seed, options) and is applied to float
images in [-1, 1], ``[C, H, W]`` or ``[N, C, H, W]``, returning a new tensor of the same shape. A new kind is
one module of this package: a :class:`~bibad_utils.triggers.base.Trigger` subclass and its ``KIND``
(:class:`~bibad_utils.triggers.base.TriggerKind`); :func:`register_trigger` adds one from outside the package.
"""

from bibad_utils.triggers.registry import (TRIGGERS, TRIGGERS_SECTION, make_trigger, register_trigger,  # noqa: F401
                                           validate_trigger_options)
