"""The networks: the table of pretrained backbones, their blocks, their weights, and the classifier built on them.

- ``backbones``: the table of ``keras.applications`` networks (no Keras import).
- ``blocks``: a backbone's layers grouped into blocks, and the default freeze depth.
- ``weights``: where the ImageNet weights come from, and the messages when they are missing.
- ``build``: backbone, preprocessing, head, the classifier, the test-time flip, freezing.
- ``augment``: random flips, rotations, zooms and shifts in one resampling; the augmenter.
"""
