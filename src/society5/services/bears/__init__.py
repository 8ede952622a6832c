"""``bears``: ヒグマ (brown bear) detection from camera-trap images, sightings and alerts (issue 5).

``society5.services.bears.vision`` is the offline vision core: EfficientNet-Lite0 ImageNet weights run in
numpy (no torch), per-camera background differences to find where something appeared, and a small
``Classifier`` Protocol so a better model can be swapped in by configuration.
"""
