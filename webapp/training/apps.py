from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "webapp.training"
    label = "training"

    def ready(self):
        # The apps below this one show and sweep what it makes, through what it registers with them.
        from webapp.datasets import prediction_source
        from webapp.jobs import sweep

        from . import orphans, queries

        prediction_source.register(prediction_source.PredictionSource(
            active_version=queries.active_version, rows=queries.prediction_rows))
        sweep.register(self.label, sweep=orphans.sweep_half_written_crops)
