"""Checkpoints: exact resume after a kill, refusal on changed config, corrupt files."""
import pytest
import torch
from train_helpers import random_data, vit_pair

from pela_export.errors import ArtifactError, CheckpointError, OptionError
from pela_export.train import TrainConfig, checkpoint_path, load_checkpoint, train_pela


class Killed(Exception):
    pass


def _cfg(ckpt, **kw):
    base = dict(epochs=3, batch_size=8, lr=3e-3, warmup_steps=2, beta=0.5, progress=False, checkpoint_dir=ckpt)
    return TrainConfig(**(base | kw))


def _kill_at(step):
    def on_step(epoch, global_step, terms):
        if global_step == step:
            raise Killed
    return on_step


def _equal_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(v, b[k]) for k, v in a.items())


def test_resume_after_kill_is_bit_exact(tmp_path):
    # dropout and drop-path on: resuming must also restore the RNG, not only the weights
    data = random_data(24)  # 3 steps per epoch
    teacher, student = vit_pair(ratio=4, drop=0.2)
    reference = train_pela(student, teacher, data, _cfg(tmp_path / "ref"))

    teacher, student = vit_pair(ratio=4, drop=0.2)
    with pytest.raises(Killed):
        train_pela(student, teacher, data, _cfg(tmp_path / "run"), on_step=_kill_at(5))  # mid epoch 2
    assert load_checkpoint(checkpoint_path(tmp_path / "run"))["epoch"] == 1

    teacher, fresh = vit_pair(ratio=4, drop=0.2)
    resumed = train_pela(fresh, teacher, data, _cfg(tmp_path / "run", resume=True))
    assert resumed.resumed_from_epoch == 1
    assert _equal_state(resumed.student.state_dict(), reference.student.state_dict())
    assert [h["total"] for h in resumed.history] == [h["total"] for h in reference.history]


def test_resume_of_finished_run_changes_nothing(tmp_path):
    data = random_data(16)
    teacher, student = vit_pair(ratio=4)
    done = train_pela(student, teacher, data, _cfg(tmp_path, epochs=1))
    teacher, fresh = vit_pair(ratio=4)
    again = train_pela(fresh, teacher, data, _cfg(tmp_path, epochs=1, resume=True))
    assert again.resumed_from_epoch == 1 and len(again.history) == 1
    assert _equal_state(again.student.state_dict(), done.student.state_dict())


def test_resume_with_changed_config_names_the_fields(tmp_path):
    data = random_data(16)
    teacher, student = vit_pair(ratio=4)
    train_pela(student, teacher, data, _cfg(tmp_path, epochs=1))
    teacher, student = vit_pair(ratio=4)
    with pytest.raises(ArtifactError) as err:
        train_pela(student, teacher, data, _cfg(tmp_path, epochs=1, lr=1e-2, lam=0.5, resume=True))
    msg = str(err.value)
    assert "lr" in msg and "lam" in msg and "epochs" not in msg and "fix:" in msg
    with pytest.raises(ArtifactError, match="train_size"):
        train_pela(student, teacher, random_data(24), _cfg(tmp_path, epochs=1, resume=True))


def test_corrupt_checkpoint_is_a_checkpoint_error(tmp_path):
    data = random_data(16)
    teacher, student = vit_pair(ratio=4)
    train_pela(student, teacher, data, _cfg(tmp_path, epochs=1))
    path = checkpoint_path(tmp_path)
    path.write_bytes(path.read_bytes()[:1000])  # truncated
    with pytest.raises(CheckpointError) as err:
        train_pela(student, teacher, data, _cfg(tmp_path, epochs=1, resume=True))
    assert str(path) in str(err.value) and "fix:" in str(err.value)
    torch.save({"something": 1}, path)
    with pytest.raises(CheckpointError, match="lacks"):
        load_checkpoint(path)


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    data = random_data(16)
    teacher, student = vit_pair(ratio=4)
    train_pela(student, teacher, data, _cfg(tmp_path, epochs=1))
    good = checkpoint_path(tmp_path).read_bytes()

    def dying_save(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"half")
        raise Killed

    monkeypatch.setattr(torch, "save", dying_save)
    teacher, student = vit_pair(ratio=4)
    with pytest.raises(Killed):
        train_pela(student, teacher, data, _cfg(tmp_path, epochs=1))
    assert checkpoint_path(tmp_path).read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == [checkpoint_path(tmp_path).name]  # no temp files left


def test_resume_without_a_checkpoint_dir_in_the_api_names_the_setting():
    teacher, student = vit_pair(ratio=4)
    with pytest.raises(OptionError) as err:
        train_pela(student, teacher, random_data(8), TrainConfig(epochs=1, resume=True, progress=False))
    assert "checkpoint_dir" in str(err.value) and "--checkpoint-dir" in str(err.value)
