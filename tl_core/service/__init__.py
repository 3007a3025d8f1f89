"""The engine as the app uses it: the facade pages call, background runs, session folders, uploads, browsing.

- ``engine``: ``Engine``, every call a page makes.
- ``jobs``: a training run in a child process, with a state a page can poll.
- ``workspace``: each browser session's folder, and safe unpacking of zips.
- ``upload``: receiving a folder the browser sends in batches; the upload limits.
- ``browse``: the folders of this computer with their image counts.
"""
