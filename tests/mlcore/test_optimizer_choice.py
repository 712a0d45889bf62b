"""The ``optimizer`` option: "adam" (weight decay as an L2 term, every version's optimizer so far, the default) or
"adamw" (decoupled weight decay); a training and its checkpoint carry the choice, and a resumed stage goes on
with it."""

import pytest
import torch

from mlcore.checkpoint import load_checkpoint
from mlcore.config import ConfigError, TrainConfig
from mlcore.train import make_optimizer, train_all
from mlcore.types import Cancelled
from tests.mlcore.helpers import two_set_table

TINY = {"backbone": "small", "backbone_kwargs": {"width": 4}, "batch_size": 32, "samples_per_epoch": 64,
        "epochs": {"sparse": 2, "correlation": 1, "completion": 1}, "device": "cpu", "num_threads": 1}


def one_step_without_gradient(optimizer_name: str, lr: float = 0.01, weight_decay: float = 0.1) -> torch.Tensor:
    weight = torch.nn.Parameter(torch.tensor([2.0, -0.5]))
    optimizer = make_optimizer([weight], TrainConfig(optimizer=optimizer_name, weight_decay=weight_decay), lr)
    weight.grad = torch.zeros_like(weight)   # the loss does not move it: only the weight decay does
    optimizer.step()
    return weight.detach()


def test_adamw_shrinks_each_weight_by_its_own_size_and_adam_by_the_normalised_l2_gradient():
    # Decoupled: w (1 - lr wd), proportional to the weight.
    assert torch.allclose(one_step_without_gradient("adamw"), torch.tensor([2.0, -0.5]) * (1 - 0.01 * 0.1))
    # L2 in the gradient: Adam divides the decay's gradient by its own scale, so the first step is lr for any
    # weight, large or small: the difference the option is about.
    assert torch.allclose(one_step_without_gradient("adam"), torch.tensor([2.0 - 0.01, -0.5 + 0.01]), atol=1e-6)


def test_the_config_takes_the_option_and_names_the_field_when_it_is_wrong():
    assert TrainConfig().optimizer == "adam"
    assert TrainConfig.from_dict({"optimizer": "adamw", "weight_decay": 0.05}).optimizer == "adamw"
    assert TrainConfig.from_dict(TrainConfig(optimizer="adamw").to_dict()).optimizer == "adamw"
    with pytest.raises(ConfigError, match="config field optimizer: 'sgd' is not one of adam, adamw"):
        TrainConfig.from_dict({"optimizer": "sgd"})
    # A config saved before the option existed trained with Adam, today's default.
    saved = TrainConfig().to_dict()
    del saved["optimizer"]
    assert TrainConfig.from_dict(saved).optimizer == "adam"


def test_a_training_with_adamw_differs_from_adam_says_so_and_resumes_with_it(tmp_path):
    table = two_set_table()[0]
    models = {}
    for name in ("adam", "adamw"):
        config = TrainConfig.from_dict({**TINY, "optimizer": name, "weight_decay": 0.05})
        result = train_all(table, config=config, out_dir=tmp_path / name, stages=("sparse",), validate_epochs=False)
        models[name] = result.model
        assert load_checkpoint(tmp_path / name / "stage1.pt").config.optimizer == name
    assert any(value.is_floating_point() and not torch.equal(value, models["adamw"].state_dict()[key])
               for key, value in models["adam"].state_dict().items()), "the two optimizers trained the same weights"

    # Cancelled in its second epoch and resumed from the first: AdamW's state goes on, to the same weights.
    seen = []
    config = TrainConfig.from_dict({**TINY, "optimizer": "adamw", "weight_decay": 0.05})
    with pytest.raises(Cancelled):
        train_all(table, config=config, stages=("sparse",), out_dir=tmp_path / "cut", validate_epochs=False,
                  progress=seen.append, should_stop=lambda: any(e["epoch"] == 2 and e["step"] > 0 for e in seen))
    last = load_checkpoint(tmp_path / "cut" / "last.pt")
    assert (last.epoch, last.stage_complete, last.config.optimizer) == (0, False, "adamw")
    resumed = train_all(table, config=config, stages=("sparse",), init_checkpoint=last, out_dir=tmp_path / "resumed",
                        validate_epochs=False)
    for key, value in resumed.model.state_dict().items():
        assert torch.equal(value, models["adamw"].state_dict()[key]), key
