"""The user's images: a folder scanned and checked, split, read and cached.

- ``records``: what a scanned dataset is (``Dataset``, ``ImageRecord``, ``SkippedFile``).
- ``scan``: ``scan_dataset``, from a folder of class folders to a ``Dataset``.
- ``split``: the train/validation/test split, and every other seeded sample drawn from a dataset.
- ``images``: one image's header and pixels (``load_image``), with the decompression-bomb guard.
- ``decoded``: every image decoded once per size and cached (``decode_images``).
- ``decisions``: the user's label decisions (keep, relabel, exclude) in ``label_decisions.json``.
- ``sample``: the built-in sample dataset.

Nothing here imports TensorFlow or Keras.
"""
