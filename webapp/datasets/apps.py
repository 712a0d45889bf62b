from django.apps import AppConfig


class DatasetsConfig(AppConfig):
    name = "webapp.datasets"
    label = "datasets"

    def ready(self):
        from webapp.jobs import sweep

        from . import orphans, slide_uploads

        sweep.register(self.label, sweep=orphans.sweep_dataset_files, named=orphans.dataset_folders,
                       give_back=slide_uploads.do_give_back_uploads)
