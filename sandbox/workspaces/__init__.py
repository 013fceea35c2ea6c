"""The workspace lifecycle, one module per job.

* :mod:`.lifecycle`: ``up`` (create or start), ``stop``, ``advance``;
* :mod:`.remove`: ``rm``, ``deinit`` and :func:`~.remove.teardown`, the one teardown that
  ``rm``, recovery and ``gc`` share;
* :mod:`.recover`: finishing what a killed operation left;
* :mod:`.checkpoints`: ``db reset``, checkpoints, ``db restore``;
* :mod:`.inspection`: ``ls``, ``env``, ``exec``, ``db url``, ``db psql``;
* :mod:`.baseline`: ``init``, ``db baseline``, seeds, the storage pool.

Each function takes the :class:`~sandbox.core.Project` as its first argument.
"""
