"""The offline vision core of the ``bears`` service.

* :mod:`.weights` reads the EfficientNet-Lite0 ``.pth`` file without torch (a restricted unpickler);
* :mod:`.network` runs EfficientNet-Lite0 in numpy (float32, folded batch norm);
* :mod:`.regions` keeps a background per camera and turns differences into candidate boxes;
* :mod:`.classifier` labels a frame bear / other_animal / person / vehicle / empty and groups bursts;
* :mod:`.exif` strips EXIF/GPS from stored copies, makes thumbnails and reads the capture time.

numpy, Pillow and OpenCV come with the ``bears`` extra (``pip install society5[bears]``); import the
submodules, not this package, for the heavy parts.
"""

from __future__ import annotations

LABELS = ("bear", "other_animal", "person", "vehicle", "empty")
