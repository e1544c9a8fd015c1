"""Two-stage inference (MODEL_SPEC 8): DICOM series or NIfTI -> the 14 probabilities.

* :class:`Predictor` (``engine.inference.predictor``): models loaded once, ``predict_series(path)``.
* :func:`predict` (``engine.inference.gateway``): the Kaggle gateway's ``predict(series_path)``, one
  row of the 14 label columns; models from :func:`configure` or the environment (see that module).
* :func:`run` (``engine.inference.stage``): the ``predict`` stage over a dataset split, with per-case
  review files and the score.
* ``engine.inference.kaggle``: the entry of a Kaggle notebook, ``serve(stage1_model, models)`` behind
  the competition's ``RSNAInferenceServer`` (or an in-process local gateway), clearing the shared folder.
* ``engine.inference.synthetic``: untrained model folders in the real contracts (tests, benchmarks).
"""
from engine.inference.gateway import configure, last_prediction, predict
from engine.inference.predictor import Predictor, SeriesPrediction
from engine.inference.stage import run

__all__ = ["Predictor", "SeriesPrediction", "configure", "last_prediction", "predict", "run"]
