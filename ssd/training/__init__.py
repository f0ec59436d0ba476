"""Training: the ``engine`` behind train.py and ``distwatch`` (lost-node watch for ``--kv-store
dist_*``). Imports every other part of ``ssd``. Deliberately empty: train.py imports
``ssd.training.distwatch`` before MXNet loads, so this package must not import the engine."""
