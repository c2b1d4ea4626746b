"""The one data-spec resolver: every registered spelling parses to one DataSpec, opens the same rows in
evaluation, calibration (pipeline and library) and training, and every spelling a message suggests parses."""
from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from pela_export.calibration import ModelInput, calibration_set
from pela_export.data import write_idx
from pela_export.data.opendata import open_data
from pela_export.data.spec import KINDS, USES, DataSpec, data_choices, parse_data_spec
from pela_export.errors import DatasetError, OptionError, PelaExportError
from pela_export.train.data import load_train_data

ROOT = Path(__file__).resolve().parents[2]
SHAPE = (1, 8, 8)


class _Spec:
    input_names = ["x"]
    outputs = [SimpleNamespace(role="logits")]
    axes: dict[str, Any] = {}

    def is_text(self) -> bool:
        return False

    def is_single_tensor(self) -> bool:
        return True


def _model(default: str | None = "digits") -> Any:
    def dummy_input(batch: int = 1, seed: int = 0) -> torch.Tensor:
        return torch.randn((batch, *SHAPE), generator=torch.Generator().manual_seed(seed))

    return SimpleNamespace(name="tiny", spec=_Spec(), input_shape=SHAPE, input_dtype=torch.float32,
                           preprocessing=None, default_dataset=default, model=None, dummy_input=dummy_input)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    from PIL import Image

    d = tmp_path_factory.mktemp("specs")
    rng = np.random.default_rng(0)
    idx = d / "idx"
    idx.mkdir()
    for stem, n in (("train", 12), ("t10k", 6)):
        write_idx(idx / f"{stem}-images-idx3-ubyte", rng.integers(0, 256, (n, 8, 8), dtype=np.uint8))
        write_idx(idx / f"{stem}-labels-idx1-ubyte", (np.arange(n) % 3).astype(np.uint8))
    np.savez(d / "a.npz", x=rng.random((12, 1, 8, 8)).astype(np.float32), y=np.arange(12) % 4)
    images = d / "images"
    for c in ("cat", "dog"):
        (images / c).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (10, 10), dtype=np.uint8)).save(images / c / f"{i}.png")
    (d / "t.tsv").write_text("text\tlabel\nhello\ta\n", encoding="utf-8")
    return {"idx": idx, "npz": d / "a.npz", "images": images, "tsv": d / "t.tsv", "dir": d}


def _spellings(kind: str, f: dict[str, Path]) -> list[str]:
    return {"digits": ["digits", " digits "], "fashion-mnist": ["fashion-mnist"], "idx": [f"idx:{f['idx']}"],
            "npz": [str(f["npz"]), f"npz:{f['npz']}"], "images": [str(f["images"]), f"images:{f['images']}"],
            "text": [str(f["tsv"]), f"text:{f['tsv']}"], "random": ["random"], "default": ["", None]}[kind]


@pytest.mark.parametrize("kind", sorted(KINDS.names()))
def test_every_spelling_of_a_kind_parses_to_one_spec(kind, files) -> None:
    specs = {parse_data_spec(s) for s in _spellings(kind, files)}
    assert len(specs) == 1 and next(iter(specs)).kind == kind
    spec = next(iter(specs))
    assert parse_data_spec(spec.spelling or None) == spec  # the canonical spelling round-trips


def test_train_test_pairs_and_help() -> None:
    assert parse_data_spec("a-train.tsv, a-test.tsv") == DataSpec("text", ("a-train.tsv", "a-test.tsv"))
    assert parse_data_spec("text:a.csv,b.csv") == DataSpec("text", ("a.csv", "b.csv"))
    assert parse_data_spec("a.npz,b.npz") == DataSpec("npz", ("a.npz", "b.npz"))
    for use in USES:
        assert {"digits", "idx:DIR", "FILE.npz", "IMAGE_DIR", "text:FILE", "TRAIN,TEST"} <= set(data_choices(use))
    assert "random" in data_choices("calib") and "random" not in data_choices("train")


def _calib_library(spelling: str, samples: int, seed: int) -> np.ndarray:
    cs = calibration_set(spelling, ModelInput("x", SHAPE), samples=samples, batch_size=samples, seed=seed)
    return cs.arrays["x"]


@pytest.mark.parametrize("kind", ["digits", "idx", "npz", "images"])
def test_same_rows_in_every_use(kind, files) -> None:
    samples, seed = 5, 3
    loaded = _model()
    for spelling in _spellings(kind, files):
        ev = open_data(spelling, loaded, use="eval", split="train", samples=samples, seed=seed)
        cal = open_data(spelling, loaded, use="calib", split="train", samples=samples, seed=seed)
        assert ev.x.shape == (samples, *SHAPE) and np.array_equal(ev.x, cal.x)
        assert np.array_equal(ev.labels, cal.labels)
        train = load_train_data(spelling, loaded)
        idx = np.random.default_rng(seed).permutation(len(train))[:samples]
        if train.x is not None:
            tx, ty = train.x[idx].numpy(), train.y[idx].numpy()
        else:
            items = [train.dataset[int(i)] for i in idx]
            tx, ty = np.stack([it[0].numpy() for it in items]), np.array([it[1] for it in items])
        assert np.allclose(tx, ev.x, atol=1e-6) and np.array_equal(ty, ev.labels)
        assert np.allclose(_calib_library(spelling, samples, seed), cal.x, atol=1e-6)


def test_default_is_the_models_dataset_else_random() -> None:
    own = open_data(None, _model(), use="calib", split="train", samples=4, seed=0)
    assert np.array_equal(own.x, open_data("digits", _model(), use="calib", split="train", samples=4, seed=0).x)
    rnd = open_data(None, _model(None), use="calib", samples=4, seed=7)
    assert rnd.spec.kind == "random" and np.array_equal(rnd.x, open_data("random", _model(), use="eval",
                                                                         samples=4, seed=7).x)
    with pytest.raises(OptionError, match="--train-data"):
        load_train_data(None, _model(None))


def test_a_spelling_refused_by_a_use_names_its_flag(files) -> None:
    with pytest.raises(DatasetError, match="--train-data random") as err:
        load_train_data("random", _model())
    assert "--train-data with one of" in str(err.value)
    with pytest.raises(DatasetError, match="--calib-data") as err:
        calibration_set(str(files["tsv"]), ModelInput("x", SHAPE))
    assert "tokenizer" in str(err.value)
    with pytest.raises(OptionError, match="labelled"):
        open_data("random", _model(), use="calib", labelled=True, samples=2)
    for flag, word in (("--data", "dataset"), ("--calib-data", "calibration source"),
                       ("--train-data", "training data")):
        with pytest.raises(DatasetError, match=f"unknown {word}") as err:
            parse_data_spec("no-such-thing", flag)
        assert f"pass {flag} with one of" in str(err.value)


_FLAG = re.compile(r"(?:--data|--calib-data|--train-data|\{flag\}|\{FLAG\}) ([^\s\"'()]+(?: (?:\||or) [^\s\"'(){-][^\s\"'()]*)*)")
_PLACEHOLDERS = {"TRAIN,TEST": "train.tsv,test.tsv", "IMAGE_DIR": "{dir}", "DIR": "{dir}", "FILE": "f"}


def _suggestions() -> set[str]:
    """Spec-looking words after a data flag in the messages of pela_export/ and calibration/."""
    found = set()
    for path in [*ROOT.joinpath("pela_export").rglob("*.py"), *ROOT.joinpath("calibration").rglob("*.py")]:
        data_code = {"data", "train", "pipeline", "calibration"} & set(path.relative_to(ROOT).parts)
        for m in _FLAG.finditer(path.read_text(encoding="utf-8")):
            if "{" in m.group(0).split()[0] and not data_code:  # {flag} of another option (e.g. --profile)
                continue
            for token in re.split(r" (?:\||or) ", m.group(1)):
                token = token.strip("`").rstrip(".,;:`")
                if "{" in token:  # a value filled in at run time
                    continue
                if any(c in token for c in ":|.") or token in KINDS or token in _PLACEHOLDERS:
                    found.add(token)
    return found


def _alternatives(token: str) -> list[str]:
    """``digits|fashion-mnist|FILE.tab|.tsv`` → ['digits', 'fashion-mnist', 'FILE.tab', 'FILE.tsv']."""
    out: list[str] = []
    for part in token.split("|"):
        out.append(re.sub(r"\.[a-z]+$", part, out[-1]) if part.startswith(".") and out else part)
    return out


def test_every_suggested_spelling_parses(files) -> None:
    suggestions = _suggestions()
    assert "digits|fashion-mnist|idx:DIR|images:DIR|FILE.npz" in suggestions  # the INT8 message
    for token in suggestions:
        for alt in _alternatives(token):
            text = alt
            for k, v in _PLACEHOLDERS.items():
                text = re.sub(rf"\b{k}\b", v, text)
            text = text.replace("{dir}", str(files["dir"]))
            try:
                spec = parse_data_spec(text)
            except PelaExportError as exc:
                raise AssertionError(f"suggested spelling {alt!r} (in {token!r}) does not parse: {exc}") from None
            assert spec.kind in KINDS
