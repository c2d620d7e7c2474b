"""fit in one process: a resumed run equals an uninterrupted one element for element, what a checkpoint holds, a
checkpoint of another world size, the distillation loss against a hand computation, evaluate, mixed precision on the
CPU, and train_epochs (the old loop's results, bit for bit)."""

import logging
import math
from dataclasses import replace

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from quantlib.data import digits_loaders, load_digits_tensors
from quantlib.training import (
    DistillationLoss,
    TrainConfig,
    accuracy,
    cross_entropy_loss,
    evaluate,
    fit,
    train_epochs,
)


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def digits() -> tuple[TensorDataset, TensorDataset]:
    return load_digits_tensors()


def mlp(seed: int = 0) -> nn.Module:
    """A small model with dropout, so that resuming needs the random generators' states."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 10))


def shuffled(dataset: TensorDataset) -> DataLoader:
    """What a training script builds afresh in every process: a shuffled loader with its own seeded generator."""
    return DataLoader(dataset, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


CONFIG = TrainConfig(epochs=4, lr=1e-2, optimiser="adamw", weight_decay=0.01, scheduler="cosine", warmup_epochs=1,
                     device="cpu", progress=False, seed=7)


def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path, digits):
    train, test = digits
    eval_loader = DataLoader(test, batch_size=128)
    uninterrupted = mlp()
    full = fit(uninterrupted, shuffled(train), replace(CONFIG, checkpoint_dir=tmp_path / "full"),
               eval_loader=eval_loader)

    def crash_after_epoch_2(result):
        if result.epoch == 2:
            raise Interrupted

    with pytest.raises(Interrupted):  # resume=True on an empty folder starts afresh
        fit(mlp(), shuffled(train), replace(CONFIG, checkpoint_dir=tmp_path / "run", resume=True),
            eval_loader=eval_loader, on_epoch_end=crash_after_epoch_2)
    torch.rand(1000)  # a new process: the global generator is elsewhere, the model initialised otherwise
    resumed = mlp(seed=1)
    second = fit(resumed, shuffled(train), replace(CONFIG, checkpoint_dir=tmp_path / "run", resume=True),
                 eval_loader=eval_loader)

    assert same_weights(resumed, uninterrupted)  # torch.equal on every tensor: no tolerance
    assert not same_weights(resumed, mlp())
    assert second.epoch == full.epoch == 4
    assert second.train_loss == full.train_loss and second.eval_accuracy == full.eval_accuracy
    assert second.lr == full.lr and len(second.seconds) == 4
    assert full.train_loss[-1] < full.train_loss[0] and full.eval_accuracy[-1] > 85.0


def test_the_checkpoint_holds_the_whole_training_state(tmp_path, digits, caplog):
    train, test = digits
    (tmp_path / "notes.txt").write_text("not ours")
    config = replace(CONFIG, epochs=2, warmup_epochs=0, checkpoint_dir=tmp_path, log_every=10)
    model = mlp()
    caplog.set_level(logging.INFO, logger="quantlib.training")
    result = fit(model, shuffled(train), config, eval_loader=DataLoader(test, batch_size=100))

    assert result.checkpoint == tmp_path / "last.pt"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "notes.txt"]  # no temporary file left
    assert (tmp_path / "notes.txt").read_text() == "not ours"
    saved = torch.load(result.checkpoint, weights_only=True)
    assert set(saved) == {"format", "version", "epoch", "model", "optimiser", "scheduler", "scaler", "rng", "config",
                          "history", "world_size", "backend"}
    assert (saved["format"], saved["epoch"], saved["world_size"], saved["backend"]) == (
        "quantlib-training-checkpoint", 2, 1, None)
    assert saved["config"] == config.as_dict() and TrainConfig.from_mapping(saved["config"]) == config
    assert list(saved["model"]) == list(model.state_dict())
    assert all(torch.equal(saved["model"][k], v) for k, v in model.state_dict().items())
    assert len(saved["optimiser"]["state"]) == 4 and saved["optimiser"]["param_groups"][0]["weight_decay"] == 0.01
    assert saved["scheduler"]["last_epoch"] == 2 and saved["scheduler"]["T_max"] == 2
    assert saved["scaler"] == {}  # no GradScaler without float16
    assert set(saved["rng"]) == {"torch", "cuda", "python", "numpy", "loader"} and len(saved["rng"]["loader"]) == 1
    assert saved["history"]["train_loss"] == result.train_loss
    assert result.eval_accuracy[-1] == evaluate(model, DataLoader(test, batch_size=100))[0]
    assert not model.training

    messages = [r.getMessage() for r in caplog.records]
    assert sum("step" in m for m in messages) == 2 * (len(shuffled(train)) // 10)
    assert any(m.startswith("epoch 2/2: loss ") and "eval accuracy" in m for m in messages)


def test_a_checkpoint_of_another_world_size_resumes_with_a_warning(tmp_path, digits, caplog):
    train, _ = digits
    config = replace(CONFIG, epochs=1, warmup_epochs=0, checkpoint_dir=tmp_path)
    fit(mlp(), shuffled(train), config)
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    torch.save({**saved, "world_size": 4, "backend": "gloo"}, tmp_path / "last.pt")

    caplog.set_level(logging.WARNING, logger="quantlib.training")
    result = fit(mlp(), shuffled(train), replace(config, epochs=2, resume=True))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("written by 4 process(es), with 1: the global batch changes from 4 x to 1 x" in m for m in warnings)
    assert any("different config (epochs 1 -> 2)" in m for m in warnings)
    assert result.epoch == 2 and len(result.train_loss) == 2


def test_resuming_from_a_foreign_file_names_it(tmp_path, digits):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "last.pt")
    with pytest.raises(ValueError, match="last.pt: not a checkpoint of quantlib.training .* set resume=False"):
        fit(mlp(), shuffled(digits[0]), replace(CONFIG, checkpoint_dir=tmp_path, resume=True))


class Fixed(nn.Module):
    """Returns the same logits (a Parameter) whatever the input; records how it was called."""

    def __init__(self, logits: list[list[float]]) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.tensor(logits))
        self.calls: list[tuple[bool, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((self.training, torch.is_grad_enabled()))
        return self.logits * 1.0


def _softmax(row: list[float]) -> list[float]:
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def test_distillation_loss_matches_a_hand_computation():
    s, t, y = [[1.0, 2.0, 0.5], [0.2, -1.0, 3.0]], [[2.0, 1.0, 0.0], [0.0, 0.0, 4.0]], [1, 2]
    temperature, alpha = 2.0, 0.75
    ce = sum(-math.log(_softmax(row)[label]) for row, label in zip(s, y, strict=True)) / 2
    kl = 0.0
    for s_row, t_row in zip(s, t, strict=True):
        p_s, p_t = _softmax([v / temperature for v in s_row]), _softmax([v / temperature for v in t_row])
        kl += sum(pt * (math.log(pt) - math.log(ps)) for pt, ps in zip(p_t, p_s, strict=True)) / 2
    expected = (1 - alpha) * ce + alpha * temperature ** 2 * kl

    student, teacher = Fixed(s), Fixed(t).train()
    value, logits = DistillationLoss(teacher, temperature, alpha)(student, torch.zeros(2, 5), torch.tensor(y))
    assert value.item() == pytest.approx(expected, rel=1e-6)
    assert torch.equal(logits, student.logits)
    assert teacher.calls == [(False, False)]  # once, in eval mode, without gradients
    value.backward()
    assert student.logits.grad is not None and teacher.logits.grad is None
    assert cross_entropy_loss(student, torch.zeros(2, 5), torch.tensor(y))[0].item() == pytest.approx(ce, rel=1e-6)


def test_evaluate_counts_and_averages_over_the_whole_loader():
    model = nn.Linear(2, 2, bias=False).train()
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
    x = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [3.0, 1.0], [0.0, 2.0]])
    y = torch.tensor([0, 1, 1, 1, 1])  # predictions 0, 1, 0, 0, 1: 3 right of 5
    loader = DataLoader(TensorDataset(x, y), batch_size=2)
    top1, mean_loss = evaluate(model, loader)
    assert top1 == 60.0 and accuracy(model, loader) == 60.0
    assert mean_loss == pytest.approx(nn.functional.cross_entropy(x, y).item(), rel=1e-6)
    assert model.training  # restored


def test_amp_on_the_cpu_autocasts_to_bfloat16_only_when_asked(digits):
    dtypes = []

    def recording(model, inputs, targets):
        loss, logits = cross_entropy_loss(model, inputs, targets)
        dtypes.append(logits.dtype)
        return loss, logits

    loader = DataLoader(digits[0], batch_size=256)
    for amp in (True, None):
        result = fit(mlp(), loader, replace(CONFIG, epochs=2, warmup_epochs=0, amp=amp), loss=recording)
        assert result.train_loss[1] < result.train_loss[0]
    assert set(dtypes[:len(loader) * 2]) == {torch.bfloat16} and set(dtypes[len(loader) * 2:]) == {torch.float32}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a CPU-only machine")
def test_cuda_without_a_gpu_says_what_to_do(digits):
    with pytest.raises(ValueError, match=r"device='cuda' but torch.cuda.is_available\(\) is False .* use device 'cpu'"):
        fit(mlp(), shuffled(digits[0]), replace(CONFIG, device="cuda"))


def old_train_epochs(model: nn.Module, loader, epochs: int, lr: float) -> nn.Module:
    """The loop train_epochs replaced, verbatim but for the progress bar."""
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(1, epochs))
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        for x, y in loader:
            optimiser.zero_grad()
            loss_fn(model(x), y).backward()
            optimiser.step()
        scheduler.step()
    return model.eval()


def test_train_epochs_lowers_the_loss_on_the_digits_exactly_as_the_old_loop():
    train, test = digits_loaders()
    model = mlp()
    loss_before = evaluate(model, test)[1]
    assert train_epochs(model, train, epochs=3, lr=2e-2) is model and not model.training
    top1, loss_after = evaluate(model, test)
    assert loss_before > 2.0 and loss_after < 0.4 and top1 > 90.0

    train, test = digits_loaders()
    reference = mlp()
    evaluate(reference, test)  # the same draws from the global generator as above (the loader's seed), for dropout
    old_train_epochs(reference, train, epochs=3, lr=2e-2)
    assert same_weights(model, reference)  # bit for bit
