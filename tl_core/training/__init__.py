"""One training run, from a ``TrainConfig`` to a run folder.

- ``run``: ``train`` and the workflow's phases (prepare, build, train, evaluate, save).
- ``context``: ``RunContext``, what the phases share, and ``RunResult``.
- ``inputs``: the decoded images and the frozen backbone's features a run trains on.
- ``fitting``: the phases that train (the head; backbone layers on images).
- ``loops``: the head's compiled loop, image batches, the learning-rate schedule, the smoothed loss.
- ``callbacks``: the one adapter from Keras' callbacks to the engine's events.
- ``reuse``: training again from an earlier run.
- ``estimate``: how long a run takes on this device.
"""
