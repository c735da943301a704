"""OpenCV, imported once for the whole package without its edit of the process environment.

``import cv2`` (opencv-python's loader) prepends its own library folder to ``os.environ["LD_LIBRARY_PATH"]`` with a
trailing ``:``. That changes no library lookup in this process (the dynamic loader reads the variable at start-up),
but every subprocess the host application starts afterwards inherits it, and the empty entry makes their dynamic
loader search the working directory. Every module of the SDK takes ``cv2`` from here: ``from
pinlite_edge.utils.opencv import cv2``. (On Windows the loader edits ``PATH`` instead; that is left as it is.)
"""
from __future__ import annotations

import os
import sys

_VARIABLE = "LD_LIBRARY_PATH"

if "cv2" in sys.modules:  # the host imported it first: its environment is its own
    import cv2
else:
    _before = os.environ.get(_VARIABLE)
    try:
        import cv2
    finally:
        if os.name != "nt":
            if _before is None:
                os.environ.pop(_VARIABLE, None)
            else:
                os.environ[_VARIABLE] = _before

__all__ = ["cv2"]
