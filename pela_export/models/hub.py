"""Files of Hugging Face hub repos, through the hub cache ``huggingface_hub`` keeps.

Users get pretrained weights by a first online run or with ``hf download``, and deploy
machines are often offline: a file comes from the cache when it is there (always with
``HF_HUB_OFFLINE=1``), is downloaded into it when the hub is reachable, and otherwise one
:class:`HubFileMissingError` names the repo, the file and the command that fetches it.
The cache location and the offline switch are read from the environment at each call
(``HF_HUB_CACHE``, ``HF_HOME``, ``HF_HUB_OFFLINE``), so they work however late they are set.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import DependencyError, ModelSourceError

#: ``ORG/NAME`` with an optional ``@REVISION`` (branch, tag or commit).
REPO_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*(@[\w./-]+)?$")
#: transformers weight files, preferred first (safetensors before pickles, one file before shards).
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
#: Files beside the weights that a transformers model, its tokenizer or sentence-transformers pooling may use.
OPTIONAL_FILES = ("preprocessor_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                  "vocab.txt", "merges.txt", "vocab.json", "sentencepiece.bpe.model", "spiece.model",
                  "modules.json", "sentence_bert_config.json")
_TRUE = {"1", "ON", "YES", "TRUE"}


class HubFileMissingError(ModelSourceError):
    """A hub file is neither in the local hub cache nor downloadable (offline, or the hub unreachable)."""


@dataclass(frozen=True)
class HubFile:
    """One resolved file: where it lies in the cache, at which commit, and whether it was already there."""

    repo_id: str
    filename: str
    path: Path
    commit: str
    origin: str  # "cache" or "download"

    def describe(self) -> str:
        return f"hf-hub {self.repo_id}@{self.commit} ({self.origin})"


def split_revision(repo: str) -> tuple[str, str | None]:
    """``ORG/NAME@REV`` → (``ORG/NAME``, ``REV``); no ``@`` → revision None (the repo's main branch)."""
    repo_id, _, revision = repo.partition("@")
    return repo_id, revision or None


def looks_like_repo_id(text: str) -> bool:
    return bool(REPO_ID_RE.match(text))


def cache_dir() -> Path:
    """The hub cache ``huggingface_hub`` uses: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub."""
    env = os.environ
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(key):
            return Path(env[key]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    base = Path(env["XDG_CACHE_HOME"]).expanduser() if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def is_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) true now, or when huggingface_hub was imported."""
    if any(os.environ.get(k, "").strip().upper() in _TRUE for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(constants.HF_HUB_OFFLINE)


def _hub() -> Any:
    try:
        import huggingface_hub
    except ImportError:
        raise DependencyError("pretrained weights from the Hugging Face hub need the huggingface_hub package",
                              fix="pip install huggingface_hub") from None
    return huggingface_hub


def _commit_of(path: str, filename: str) -> str:
    """The commit in ``.../snapshots/<commit>/<filename>``."""
    return Path(path).parts[-len(PurePosixPath(filename).parts) - 1]


def missing_error(repo_id: str, filenames: Sequence[str], what: str, revision: str | None = None,
                  cause: str | None = None) -> HubFileMissingError:
    """The one message for a file that is not cached and cannot be downloaded: which file, and how to get it."""
    cache, offline = cache_dir(), is_offline()
    reason = cause or ("HF_HUB_OFFLINE=1 is set" if offline else "the hub is unreachable from this machine")
    files = filenames[0] + "".join(f" (or {f})" for f in filenames[1:])
    at = f" at revision {revision}" if revision else ""
    here = ("with internet here, unset HF_HUB_OFFLINE to download" if offline
            else "without internet here, set HF_HUB_OFFLINE=1 to use the cache without network retries")
    return HubFileMissingError(
        f"{files} ({what}){at} is not in the local hub cache {cache} and cannot be downloaded: {reason}",
        fix=f"on a machine with internet run `hf download {repo_id} {filenames[0]}` (older huggingface_hub: "
            f"`huggingface-cli download {repo_id}`), then copy its ~/.cache/huggingface/hub to {cache} here, or "
            f"point HF_HUB_CACHE (or HF_HOME) at the copied cache; {here}",
        where=f"Hugging Face repo {repo_id}")


def fetch(repo_id: str, candidates: Sequence[str], *, what: str, revision: str | None = None,
          required: bool = True, local_only: bool = False) -> HubFile | None:
    """The first of ``candidates`` the repo has, from the cache or downloaded (None if optional and absent).

    ``local_only`` looks in the cache only (the hub already proved unreachable).
    """
    hub = _hub()
    from huggingface_hub import utils as hf_utils

    cache, offline = cache_dir(), is_offline() or local_only
    unreachable = False
    for name in candidates:
        before = hub.try_to_load_from_cache(repo_id, name, cache_dir=str(cache), revision=revision)
        try:
            path = hub.hf_hub_download(repo_id, name, revision=revision, cache_dir=str(cache),
                                       local_files_only=offline)
        except hf_utils.LocalEntryNotFoundError:  # not cached, and offline or the hub unreachable
            unreachable = True
            continue
        except hf_utils.EntryNotFoundError:  # the hub answered: the repo has no such file
            continue
        except hf_utils.RevisionNotFoundError:
            raise ModelSourceError(f"Hugging Face repo {repo_id} has no revision {revision!r}",
                                   fix=f"pass {repo_id} without @REVISION, or a branch, tag or commit it has") from None
        except hf_utils.RepositoryNotFoundError:  # also gated / private without a token
            raise ModelSourceError(f"Hugging Face repo {repo_id} does not exist or needs a login (private or gated)",
                                   fix="check the id on huggingface.co; for a gated or private repo accept its terms "
                                       "there and run `hf auth login` (or set HF_TOKEN)") from None
        except hf_utils.HFValidationError as exc:
            raise ModelSourceError(f"{repo_id!r} is not a valid Hugging Face repo id ({exc})",
                                   fix="pass ORG/NAME, e.g. hf:google-bert/bert-base-uncased") from None
        except OSError as exc:  # another HTTP or file-system failure
            raise missing_error(repo_id, [name], what, revision, cause=f"{type(exc).__name__}: {exc}"[:300]) from None
        same = isinstance(before, str) and Path(before).resolve() == Path(path).resolve()
        return HubFile(repo_id, name, Path(path), _commit_of(path, name), "cache" if same else "download")
    if not required:
        return None
    if unreachable:
        raise missing_error(repo_id, list(candidates), what, revision)
    raise ModelSourceError(f"Hugging Face repo {repo_id} has no {' or '.join(candidates)} ({what})",
                           fix="check the repo id: it must hold a saved model (config.json and its weights)")


def fetch_weights(repo_id: str, revision: str, what: str) -> HubFile:
    """A transformers model's weights: one file, or an index and every shard it names."""
    weights = fetch(repo_id, WEIGHT_FILES, what=what, revision=revision)
    assert weights is not None  # required=True raises instead
    if weights.filename.endswith(".index.json"):
        shards = sorted(set(json.loads(weights.path.read_text(encoding="utf-8")).get("weight_map", {}).values()))
        for shard in shards:
            fetch(repo_id, [shard], what=f"a shard of {weights.filename}", revision=revision)
    return weights


def hf_snapshot(repo: str) -> tuple[Path, HubFile]:
    """A transformers repo (``ORG/NAME[@REV]``) as a local directory: its snapshot in the hub cache.

    config.json and the weights are required; the tokenizer, image-processor and
    sentence-transformers files come along where the repo (or, offline, the cache) has them.
    All files are read at the commit config.json resolved to, so they belong together.
    """
    repo_id, revision = split_revision(repo)
    config = fetch(repo_id, ["config.json"], revision=revision,
                   what=f"the model's config; hf:{repo} is no local directory, so it names a hub repo")
    assert config is not None
    weights = fetch_weights(repo_id, config.commit, "the model's weights")
    local_only = _optional(repo_id, OPTIONAL_FILES, config.commit, local_only=False)
    modules = config.path.parent / "modules.json"
    if modules.is_file():  # sentence-transformers: the pooling config lives in a sub-folder
        try:
            entries = json.loads(modules.read_text(encoding="utf-8"))
            folders = [str(m.get("path", "")) for m in entries if str(m.get("type", "")).endswith("Pooling")]
        except (ValueError, AttributeError, TypeError):
            folders = []  # read_pooling reports the malformed file
        _optional(repo_id, [f"{f}/config.json" for f in folders], config.commit, local_only=local_only)
    return config.path.parent, weights


def _optional(repo_id: str, names: Sequence[str], commit: str, *, local_only: bool) -> bool:
    """Fetch the files of ``names`` the repo has; once the hub proves unreachable the rest come from the cache
    only (each miss would otherwise wait through huggingface_hub's retries). Returns that local-only state."""
    for name in names:
        try:
            fetch(repo_id, [name], what="optional", revision=commit, local_only=local_only)
        except HubFileMissingError:
            local_only = True
        except ModelSourceError:
            pass  # the repo has no such file
    return local_only
