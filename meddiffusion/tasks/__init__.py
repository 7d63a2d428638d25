"""One module per task: its configuration, preprocessing, inference on a whole volume
(``infer``-style functions taking a ``Volume`` and returning one on the same grid), paired-data
simulation for training, and evaluation.  Commands and benches call these; they hold no I/O."""
