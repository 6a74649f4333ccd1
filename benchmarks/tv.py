"""torchvision's pure-Python model definitions without its compiled ops (benchmarks only).

torchvision has no CPU build here: importing it fails while it registers fake kernels for its
compiled ops (nms, roi_align ...). The classification models need none of them, so a failed
registration is skipped. Install with ``pip install --no-deps torchvision==0.28.0``.
"""

from __future__ import annotations

import torch


def import_torchvision():
    """torchvision, or None when it is not installed."""
    real = torch.library.register_fake

    def tolerant(*args, **kwargs):
        try:
            deco = real(*args, **kwargs)
        except Exception:
            return lambda fn: fn
        def apply(fn):
            try:
                return deco(fn)
            except Exception:
                return fn
        return apply

    torch.library.register_fake = tolerant
    try:
        import torchvision
    except ImportError:
        return None
    finally:
        torch.library.register_fake = real
    return torchvision
