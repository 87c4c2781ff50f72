"""What a round shows: metrics, image sheets, the TensorBoard tag layout and where it is written.

- :mod:`~lightning_ldam.report.metrics` and :mod:`~lightning_ldam.report.realism`: the figures;
- :mod:`~lightning_ldam.report.render`: labelled image sheets;
- :mod:`~lightning_ldam.report.tags`: the tag layout (:func:`~lightning_ldam.report.tags.summarize`);
- :mod:`~lightning_ldam.report.labels`: unit labels and layer aliases;
- :mod:`~lightning_ldam.report.writers` and :mod:`~lightning_ldam.report.tensorboard_writer`: TensorBoard,
  loggers with ``log_image``, PNG files.
"""
