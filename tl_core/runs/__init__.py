"""The run folder and what is done with it afterwards.

- ``folder``: the files of a run folder, ``RunSummary`` (``run.json``), writing and reading them.
- ``predict``: the class of new images, and a run evaluated on a dataset.
- ``history``: the runs folder listed, compared and cleaned up.
- ``portable``: TFLite and ONNX files, each checked against the Keras model.
"""
