"""TrainConfig: validation messages name the key, the value and what is allowed; the optimiser and scheduler it
names are built with its values."""

import math

import pytest
import torch

from quantlib.training import TrainConfig, make_optimiser, make_scheduler


def test_unknown_keys_are_refused_listing_the_valid_ones():
    with pytest.raises(ValueError) as info:
        TrainConfig.from_mapping({"epochs": 3, "learning_rate": 0.1, "batch_size": 32}, "run.yaml")
    message = str(info.value)
    assert message.startswith("run.yaml: unknown key(s) ['batch_size', 'learning_rate']; valid keys: [")
    assert "'lr'" in message and "'optimiser'" in message and "'checkpoint_dir'" in message


@pytest.mark.parametrize(("data", "expected"), [
    ({"optimiser": "rmsprop"},
     "run.yaml: optimiser='rmsprop' is not allowed: optimiser must be one of the optimisers "
     "['adam', 'adamw', 'sgd'] (register another in quantlib.training.OPTIMISERS)."),
    ({"scheduler": "linear"},
     "run.yaml: scheduler='linear' is not allowed: scheduler must be one of the schedulers "
     "['cosine', 'cosineannealinglr', 'step', 'steplr', 'none'] (register another in quantlib.training.SCHEDULERS)."),
    ({"device": "gpu"}, "run.yaml: device='gpu' is not allowed: device must be one of ['cpu', 'cuda', 'auto']."),
    ({"lr": 0}, "run.yaml: lr=0 is not allowed: lr must be a number > 0."),
    ({"lr": "1e-3"}, "run.yaml: lr='1e-3' is not allowed: lr must be a number > 0 (YAML reads 1e-3, without a dot, "
                     "as text: write 1.0e-3)."),
    ({"lr": "fast"}, "run.yaml: lr='fast' is not allowed: lr must be a number > 0."),
    ({"epochs": 2.5}, "run.yaml: epochs=2.5 is not allowed: epochs must be an integer >= 0."),
    ({"epochs": True}, "run.yaml: epochs=True is not allowed: epochs must be an integer >= 0."),
    ({"gamma": 1.5}, "run.yaml: gamma=1.5 is not allowed: gamma must be a number in (0, 1]."),
    ({"momentum": 0.9}, "run.yaml: momentum=0.9 applies to optimiser 'sgd' only, not 'adam': set optimiser to 'sgd' "
                        "or momentum to 0."),
    ({"optimiser": "sgd", "nesterov": True},
     "run.yaml: nesterov=True needs optimiser 'sgd' with momentum > 0, got optimiser='sgd' and momentum=0.0."),
    ({"epochs": 3, "warmup_epochs": 3}, "run.yaml: warmup_epochs=3 is not allowed with epochs=3: warmup_epochs must "
                                        "be smaller than epochs (or 0)."),
    ({"resume": True}, "run.yaml: resume=True needs checkpoint_dir, the folder holding last.pt."),
])
def test_invalid_values_name_key_value_and_what_is_allowed(data, expected):
    with pytest.raises(ValueError) as info:
        TrainConfig.from_mapping(data, "run.yaml")
    assert str(info.value) == expected


def test_direct_construction_is_validated_too():
    with pytest.raises(ValueError, match=r"^TrainConfig: log_every=-1 is not allowed: log_every must be an integer"):
        TrainConfig(log_every=-1)


def test_as_dict_round_trips_through_from_mapping(tmp_path):
    config = TrainConfig(epochs=4, optimiser="sgd", momentum=0.9, nesterov=True, checkpoint_dir=str(tmp_path),
                         resume=True, seed=None)
    assert config.checkpoint_dir == tmp_path  # normalised to a Path
    assert config.as_dict()["checkpoint_dir"] == str(tmp_path)
    assert TrainConfig.from_mapping(config.as_dict()) == config


def _params() -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.zeros(3))]


@pytest.mark.parametrize(("name", "cls"), [("adam", torch.optim.Adam), ("sgd", torch.optim.SGD),
                                           ("adamw", torch.optim.AdamW)])
def test_optimiser_choices(name, cls):
    extra = {"momentum": 0.8, "nesterov": True} if name == "sgd" else {}
    optimiser = make_optimiser(TrainConfig(optimiser=name, lr=0.05, weight_decay=1e-4, **extra), _params())
    assert type(optimiser) is cls
    group = optimiser.param_groups[0]
    assert (group["lr"], group["weight_decay"]) == (0.05, 1e-4)
    if name == "sgd":
        assert (group["momentum"], group["nesterov"]) == (0.8, True)


def test_param_groups_keep_their_own_settings():
    groups = [{"params": _params()}, {"params": _params(), "weight_decay": 0.0}]
    optimiser = make_optimiser(TrainConfig(optimiser="adamw", weight_decay=0.05), groups)
    assert [g["weight_decay"] for g in optimiser.param_groups] == [0.05, 0.0]


def _rates(config: TrainConfig) -> list[float]:
    optimiser = make_optimiser(config, _params())
    scheduler = make_scheduler(config, optimiser)
    rates = []
    for _ in range(config.epochs):
        rates.append(optimiser.param_groups[0]["lr"])
        optimiser.step()  # no gradients: nothing moves, but the scheduler sees the order fit uses
        if scheduler is not None:
            scheduler.step()
    return rates


@pytest.mark.parametrize(("config", "expected"), [
    (TrainConfig(epochs=4, lr=1.0, scheduler="cosine"), [1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5,
                                                         0.5 * (1 + math.cos(3 * math.pi / 4))]),
    (TrainConfig(epochs=5, lr=1.0, scheduler="step", step_size=2, gamma=0.5), [1.0, 1.0, 0.5, 0.5, 0.25]),
    (TrainConfig(epochs=3, lr=0.1, scheduler="none"), [0.1, 0.1, 0.1]),
    (TrainConfig(epochs=4, lr=0.3, scheduler="none", warmup_epochs=2), [0.1, 0.2, 0.3, 0.3]),
    (TrainConfig(epochs=4, lr=1.0, scheduler="cosine", warmup_epochs=2), [1 / 3, 2 / 3, 1.0, 0.5]),
    (TrainConfig(epochs=4, lr=1.0, scheduler="step", step_size=1, gamma=0.5, warmup_epochs=1), [0.5, 1.0, 0.5, 0.25]),
])
def test_scheduler_choices_give_the_documented_rates(config, expected):
    assert _rates(config) == pytest.approx(expected, abs=1e-12)


def test_registry_names_match_regardless_of_case_and_torch_class_names_name_the_schedules():
    config = TrainConfig(optimiser="SGD", momentum=0.9, scheduler="StepLR", step_size=1, gamma=0.5, epochs=3, lr=1.0)
    assert (config.optimiser, config.scheduler) == ("sgd", "steplr")
    assert type(make_optimiser(config, _params())) is torch.optim.SGD
    assert _rates(config) == [1.0, 0.5, 0.25]


def test_a_registered_optimiser_and_criterion_are_used_by_name(monkeypatch):
    from quantlib.registry import Registry
    from quantlib.training import CRITERIA, OPTIMISERS, criterion_loss

    monkeypatch.setattr(OPTIMISERS, "_items", dict(OPTIMISERS._items))  # registered for this test only
    monkeypatch.setattr(CRITERIA, "_items", dict(CRITERIA._items))
    OPTIMISERS.register("RMSprop", lambda config, params: torch.optim.RMSprop(params, lr=config.lr))
    CRITERIA.register("l1_logit", lambda: (lambda logits, targets: logits.abs().sum()))
    optimiser = make_optimiser(TrainConfig(optimiser="rmsprop", lr=0.25), _params())
    assert type(optimiser) is torch.optim.RMSprop and optimiser.param_groups[0]["lr"] == 0.25
    value, logits = criterion_loss("L1_LOGIT")(lambda x: 2 * x, torch.tensor([[1.0, -3.0]]), torch.tensor([0]))
    assert value.item() == 8.0 and logits.tolist() == [[2.0, -6.0]]
    with pytest.raises(ValueError, match="The optimiser name 'Adam' is taken; pass replace=True to replace its"):
        OPTIMISERS.register("Adam", lambda config, params: None)
    with pytest.raises(KeyError, match=r"No criterion is registered as 'huber'; registered: \['crossentropyloss', "
                                       r"'l1_logit'\]"):
        criterion_loss("huber")
    assert isinstance(CRITERIA, Registry)
