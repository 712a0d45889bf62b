"""What the training job reports from mlcore's per-batch progress: epochs as people count them, the
percentage and an ETA of the whole job (not of the running stage only), and its log lines."""

from webapp.training.runner import TrainingProgress


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def recorder():
    calls = []

    def report(percent, **details):
        calls.append({"percent": percent, **details})
    return calls, report


def batch(stage, epoch, step, steps, epochs, eta_s, loss=0.5, epoch_loss=0.5):
    return {"stage": stage, "epoch": epoch, "epochs": epochs, "step": step, "steps": steps, "loss": loss,
            "epoch_loss": epoch_loss, "eta_s": eta_s}


def stage_start(stage, epochs, done=0):
    return {"stage": stage, "epoch": done, "epochs": epochs, "step": 0, "steps": 0, "loss": float("nan"),
            "eta_s": float("nan")}


def test_a_one_epoch_run_counts_epoch_1_of_1_and_ends_at_the_end_of_training():
    calls, report = recorder()
    progress = TrainingProgress(["sparse"], {"sparse": 1}, report, clock=Clock())
    progress(stage_start("sparse", 1))
    for step in (1, 2, 3):
        progress(batch("sparse", 1, step, 4, 1, eta_s=3.0 * (4 - step)))
    # The last batch held 2 nuclei and a loss of 1.26: the line says the epoch's mean, as its history does.
    progress(batch("sparse", 1, 4, 4, 1, eta_s=0.0, loss=1.26, epoch_loss=0.5))
    assert {(c["epoch"], c["epochs"]) for c in calls} == {(1, 1)}  # never "epoch 2/1"
    percents = [c["percent"] for c in calls]
    assert percents == sorted(percents) and percents[0] == 5.0 and percents[-1] == 95.0
    assert calls[0]["log"] == "stage sparse: 1 epoch"
    assert calls[-1]["log"] == "stage sparse, epoch 1/1 done: loss 0.5000"
    assert [c["log"] for c in calls[1:-1]] == [None, None, None]


def test_the_eta_covers_the_stages_still_to_come():
    clock = Clock()
    calls, report = recorder()
    stages = ["sparse", "correlation", "completion"]
    progress = TrainingProgress(stages, {"sparse": 2, "correlation": 2, "completion": 2}, report, clock=clock)
    progress(stage_start("sparse", 2))
    clock.now = 50.0
    # A quarter of stage 1 took 50 s, mlcore expects 150 s more for it: 100 s per backbone epoch. Left:
    # 150 s of stage 1, stage 2 (about one epoch, 100 s) and stage 3 (two epochs, 200 s).
    progress(batch("sparse", 1, 5, 10, 2, eta_s=150.0))
    assert calls[-1]["eta_s"] == 450.0
    assert (calls[-1]["epoch"], calls[-1]["epochs"]) == (1, 2)
    assert round(calls[-1]["percent"], 2) == 12.5  # a quarter of the first of three stages
    # Stage 2 begins at 200 s: no stage ETA from mlcore yet, the measured pace costs it.
    clock.now = 200.0
    progress(stage_start("correlation", 2))
    assert calls[-1]["eta_s"] == 300.0 and calls[-1]["percent"] == 35.0
    assert (calls[-1]["epoch"], calls[-1]["epochs"]) == (1, 2)
    # Stage 3, half of its first epoch done in 60 s with 180 s to go: 120 s per epoch now.
    clock.now = 300.0
    progress(stage_start("completion", 2))
    clock.now = 360.0
    progress(batch("completion", 1, 4, 8, 2, eta_s=180.0))
    assert calls[-1]["eta_s"] == 180.0
    clock.now = 540.0
    progress(batch("completion", 2, 8, 8, 2, eta_s=0.0))
    assert calls[-1]["eta_s"] == 0.0 and calls[-1]["percent"] == 95.0
    assert calls[-1]["log"] == "stage completion, epoch 2/2 done: loss 0.5000"


def test_a_resumed_stage_starts_at_the_epochs_it_had_done():
    calls, report = recorder()
    progress = TrainingProgress(["sparse"], {"sparse": 4}, report, clock=Clock())
    progress(stage_start("sparse", 4, done=2))
    assert (calls[-1]["epoch"], calls[-1]["epochs"], calls[-1]["percent"]) == (3, 4, 50.0)


def test_an_ensemble_splits_each_stage_between_its_models_and_counts_their_turns_in_the_eta():
    clock = Clock()
    calls, report = recorder()
    progress = TrainingProgress(["sparse", "completion"], {"sparse": 2, "completion": 2}, report, clock=clock)

    def member(event, number):
        return {**event, "member": number, "members": 2}
    progress(member(stage_start("sparse", 2), 1))
    assert calls[-1]["log"] == "model 1/2, stage sparse: 2 epochs" and (calls[-1]["model"], calls[-1]["models"]) == (1, 2)
    clock.now = 50.0
    # Model 1: a quarter of its stage 1 in 50 s, 150 s more: 100 s per epoch. Left: its 150 s, model 2's stage 1
    # (200 s), then both models' stage 3 (400 s).
    progress(member(batch("sparse", 1, 5, 10, 2, eta_s=150.0), 1))
    assert calls[-1]["eta_s"] == 750.0
    assert round(calls[-1]["percent"], 3) == 5 + 90 * (0.25 / 2) / 2   # a quarter of model 1's half of stage 1
    clock.now = 200.0
    progress(member(batch("sparse", 2, 10, 10, 2, eta_s=0.0), 1))
    assert calls[-1]["percent"] == 5 + 90 * 0.5 / 2 and calls[-1]["log"].startswith("model 1/2, stage sparse, epoch 2/2")
    progress(member(stage_start("sparse", 2), 2))
    assert calls[-1]["eta_s"] == 600.0 and calls[-1]["percent"] == 5 + 90 * 0.5 / 2
    clock.now = 400.0
    progress(member(batch("completion", 2, 10, 10, 2, eta_s=0.0), 2))
    assert calls[-1]["eta_s"] == 0.0 and calls[-1]["percent"] == 95.0
    percents = [c["percent"] for c in calls]
    assert percents == sorted(percents)
