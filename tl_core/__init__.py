"""tl_core: guided transfer learning for images, from a folder of labelled photos to a model file.

The package is UI-free. Importing it is cheap: TensorFlow is only imported by
the modules that train or load models (``tl_core.training``, ``tl_core.models``,
``tl_core.export``), never by ``tl_core.data`` or ``tl_core.backbones``.
"""

__version__ = "0.1.0"
