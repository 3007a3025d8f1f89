"""tl_core: guided transfer learning for images, from a folder of labelled photos to a model file.

The package is UI-free. Its sub-packages follow the path of a run: ``data``
(the images), ``models`` (the networks), ``features`` (the frozen backbone's
outputs), ``training`` (one run), ``advice`` (which strategy), ``insight``
(metrics, attention maps, doubtful labels), ``runs`` (the run folder and its
history), ``service`` (what the app uses), ``cli`` (the command line).
``docs/architecture.md`` draws the layout and the flow of one run.

Importing it is cheap: TensorFlow and Keras are imported only by the modules
that build or train models, never by ``tl_core.data``, ``tl_core.config`` or
``tl_core.models.backbones``.
"""

__version__ = "0.1.0"
