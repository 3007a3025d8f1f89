"""Which strategy fits the data, and why.

- ``scenario``: the four-scenario matrix (size x similarity).
- ``similarity``: how similar the images are to ImageNet, measured.
- ``candidates``: each strategy's expected accuracy and minutes on this device.
- ``advise``: the measured recommendation (``advise``).
- ``auto``: ``run_training``, which resolves ``--strategy auto`` and trains.
- ``compare``: strategies trained side by side on the same split.
"""
