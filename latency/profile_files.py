"""The files of a profiled device's folder (``edgenas profile --out``, a run's
``devices/NAME/``): its lookup table and the predictor fitted on it."""

LUT_NAME = "lut.json"
PREDICTOR_NAME = "predictor.json"
