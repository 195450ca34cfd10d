"""Resource planning: predict a job's time and memory per layout (``mpiml plan``).

:func:`predict` prices one :class:`Job` on one :class:`Layout` of a :class:`Cluster`
from the compute constants and communication parameters of a tuning file
(:func:`load_calibration`). Sits below the command line and above the collectives:
it imports :mod:`mpiml.collectives.model` and :mod:`mpiml.parallel.cost`, never
:mod:`mpiml.cli`.
"""

from mpiml.plan.calibration import Calibration, load_calibration
from mpiml.plan.predict import predict
from mpiml.plan.spec import Cluster, Job, Layout, Prediction

__all__ = ["Calibration", "Cluster", "Job", "Layout", "Prediction", "load_calibration", "predict"]
