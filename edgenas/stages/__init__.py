"""The stages of the job, one plain function each, with typed options and results:
``train`` (progressive shrinking into a run folder), ``profile`` (lookup tables and calibrated
predictors for one or more devices), ``search`` (the Pareto front and the subnet chosen under
each budget) and ``export`` (checked, measured model files with a card). The command line
and ``edgenas.pipeline`` (``edgenas run``) both call these."""
