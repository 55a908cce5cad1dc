"""Training stages: the three models, training, evaluation, the gate, the run report and
packaging."""
