"""The runtime: the CGaP hook (``hook.py``), the training loop (``loop.py``), checkpoints, distributed
runs, datasets, the config and plots. The names most users need::

    from cgap_graph.run import CGaP, TrainConfig, train_run
"""

from cgap_graph.run.config import TrainConfig, load_config
from cgap_graph.run.epochs import EpochResult, TrainingDiverged, evaluate, train_epoch
from cgap_graph.run.hook import CGaP, Event
from cgap_graph.run.loop import RunResult, train_run

__all__ = ["CGaP", "EpochResult", "Event", "RunResult", "TrainConfig", "TrainingDiverged", "evaluate", "load_config",
           "train_epoch", "train_run"]
