"""Hugging Face reward models as scorers: classifiers with one output and safe-rlhf score models.

:class:`RewardModelScorer` implements the :class:`llm.scorers.Scorer` protocol for two kinds of checkpoint:

* **Sequence classifiers** (``AutoModelForSequenceClassification`` with ``num_labels = 1``, e.g. the
  OpenAssistant DeBERTa or Skywork Llama reward models): the score is ``logits[:, 0]``. The (prompt, response)
  pair goes through the tokenizer's chat template as a user turn and an assistant turn when it has one, and
  is otherwise encoded as a sentence pair (which is plain concatenation for tokenizers without a pair template).
* **safe-rlhf score models** (``LlamaForScore``, loaded by ``safe_rlhf.models.AutoModelForScore``), such as the
  paper's ``PKU-Alignment/beaver-7b-v1.0-reward`` (helpfulness r) and ``-cost`` (cost c; the paper's safety
  utility is ``g = -c``, Sec. 4.1.1). transformers has no such class, so the decoder is loaded with
  ``AutoModel`` (which strips the checkpoint's ``model.`` prefix) and the ``score_head`` linear layer is read
  from the checkpoint files. The score is the head applied to the final hidden state of the last real token,
  safe-rlhf's ``end_scores``, normalised as safe-rlhf does when the config sets ``do_normalize``.

Inputs are padded on the right, so causal models see every real token at the position it has unpadded and
batching does not change a score. A hub id is downloaded into the Hugging Face cache, or with ``offline=True``
read from it only (``local_files_only``); the model's files are then read from that folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors import safe_open

from llm.models import DTYPES, ModelLoadError, _looks_like_path

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["PKU_CHAT_TEMPLATE", "PKU_PROMPT", "RewardModelScorer"]

logger = logging.getLogger(__name__)

PKU_PROMPT = "BEGINNING OF CONVERSATION: USER: {prompt} ASSISTANT:"
"""safe-rlhf's prompt, ``PROMPT_BEGIN + PROMPT_USER + PROMPT_ASSISTANT`` in ``safe_rlhf/configs/constants.py``
(no space after ``ASSISTANT:``). Its preference datasets (``safe_rlhf/datasets/preference.py``) train the score
models on ``prompt + answer + eos_token``, tokenized with the tokenizer's BOS, so that is what is scored here."""

PKU_CHAT_TEMPLATE = (
    "{{ bos_token }}BEGINNING OF CONVERSATION: "
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ 'USER: ' + message['content'] + ' ASSISTANT:' }}"
    "{% else %}{{ message['content'] + eos_token }}{% endif %}"
    "{% endfor %}"
)
"""The same format as a chat template, for the policy's tokenizer (Alpaca-7B-reproduced ships none).

It renders safe-rlhf's ``format_prompt`` (``PROMPT_BEGIN``, then ``USER: {input} ASSISTANT:`` per user turn and
``answer + eos`` per assistant turn) and starts with the BOS token because the sampler tokenizes templated
prompts without special tokens."""

_HEAD = "score_head."
_NORMALIZER = "normalizer."
_SCORE_ARCHITECTURE_SUFFIX = "ForScore"  # LlamaForScore, and the older LlamaModelForScore
_WEIGHT_FILES = (
    "model.safetensors.index.json",
    "model.safetensors",
    "pytorch_model.bin.index.json",
    "pytorch_model.bin",
)


def _resolve_folder(source: str, offline: bool = True) -> Path:
    """A local folder, or the snapshot of a hub id (downloaded unless ``offline``)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if _looks_like_path(source) or path.exists():
        raise ModelLoadError(
            f"reward model {source!r}: no such folder; pass a folder holding a Hugging Face model (config.json, "
            f"weights, tokenizer files) or a hub id already in the local cache"
        )
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(source, local_files_only=offline))
    except Exception as exc:  # not cached (offline), not on the hub, or not a valid repo id
        where = "in the local Hugging Face cache (offline)" if offline else "on the hub"
        raise ModelLoadError(
            f"reward model {source!r}: not a folder and not {where} ({type(exc).__name__}); download it first "
            f"(`hf download {source}`) or pass a local folder"
        ) from exc


def _weight_map(folder: Path) -> dict[str, Path]:
    """Every tensor name in the checkpoint and the file holding it, in transformers' order of preference."""
    for name in _WEIGHT_FILES:
        path = folder / name
        if not path.is_file():
            continue
        if name.endswith(".index.json"):
            index = json.loads(path.read_text())["weight_map"]
            return {key: folder / file for key, file in index.items()}
        if name.endswith(".safetensors"):
            with safe_open(path, framework="pt") as handle:
                return dict.fromkeys(handle.keys(), path)
        return dict.fromkeys(torch.load(path, map_location="cpu", mmap=True, weights_only=True), path)
    raise ModelLoadError(
        f"reward model folder {folder}: no weights ({', '.join(_WEIGHT_FILES)}); download the complete model"
    )


def _read_tensors(weight_map: dict[str, Path], keys: Sequence[str]) -> dict[str, torch.Tensor]:
    """Read only ``keys`` from the checkpoint files (the head is a few KB of a 13 GB checkpoint)."""
    out: dict[str, torch.Tensor] = {}
    for file in {weight_map[k] for k in keys}:
        wanted = [k for k in keys if weight_map[k] == file]
        if file.suffix == ".safetensors":
            with safe_open(file, framework="pt") as handle:
                out.update({k: handle.get_tensor(k) for k in wanted})
        else:
            state = torch.load(file, map_location="cpu", mmap=True, weights_only=True)
            out.update({k: state[k] for k in wanted})
    return out


@contextlib.contextmanager
def _quiet_load_report() -> Iterator[None]:
    """Silence transformers' load report: it lists the score head as unexpected; we check the keys ourselves.

    The level is set on the package logger: a level on ``transformers.modeling_utils`` itself makes
    transformers print its tensor-parallel plan check instead.
    """
    report_logger = logging.getLogger("transformers")
    level = report_logger.level
    report_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        report_logger.setLevel(level)


def _resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` is CUDA when available; a bare ``"cuda"`` is the current CUDA device (a torchrun rank's own)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device: use 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    if resolved.type == "cuda" and resolved.index is None:
        resolved = torch.device("cuda", torch.cuda.current_device())
    return resolved


class RewardModelScorer:
    """Scores (prompt, response) pairs with a Hugging Face reward model or a safe-rlhf score model.

    Attributes:
        name: ``"hf:<source>"`` as given (a leading ``-`` in a :func:`llm.scorers.build_scorer` spec negates it).
        kind: ``"score_model"`` (safe-rlhf ``score_head``) or ``"sequence_classification"``.
        input_format: ``"pku"`` (:data:`PKU_PROMPT` plus response and EOS), ``"chat_template"`` or ``"text_pair"``.
        model: The loaded transformers module (the bare decoder for score models), in eval mode.
        tokenizer: Its tokenizer, padding on the right.
    """

    def __init__(
        self,
        source: str | Path,
        *,
        device: str | torch.device = "cpu",
        dtype: str = "float32",
        batch_size: int = 8,
        max_length: int = 512,
        offline: bool = False,
    ) -> None:
        """Load the model and tokenizer and detect the model's kind.

        Args:
            source: A local folder or a hub id (in the Hugging Face cache when ``offline``).
            device: ``"cpu"``, ``"cuda"`` (the current CUDA device), ``"cuda:N"``, ``"auto"`` (CUDA when
                available) or a ``torch.device``.
            dtype: Weight dtype, a key of :data:`llm.models.DTYPES` (``"bfloat16"`` on GPUs; scores are float32
                either way).
            batch_size: Pairs per forward pass.
            max_length: Longer inputs are truncated to this many tokens (the paper's max_length is 512).
            offline: Read a hub id from the local Hugging Face cache only, so an unknown one fails at once.

        Raises:
            ModelLoadError: The folder is missing, the hub id is not cached, or the checkpoint is not a reward
                model (a classifier with ``num_labels != 1`` and no ``score_head``, or weights missing).
            ValueError: A bad ``device``, ``dtype``, ``batch_size`` or ``max_length``.
        """
        from transformers import AutoConfig, AutoTokenizer

        if dtype not in DTYPES:
            raise ValueError(f"dtype: use one of {', '.join(DTYPES)}, got {dtype!r}")
        if batch_size < 1 or max_length < 2:
            raise ValueError(f"batch_size must be >= 1 and max_length >= 2, got {batch_size}, {max_length}")
        self.name = f"hf:{source}"
        self.device = _resolve_device(device)
        self.batch_size = batch_size
        self.max_length = max_length
        label = str(source)
        folder = _resolve_folder(label, offline)
        self.folder = folder  # what the reference-phase cache key fingerprints
        try:
            config = AutoConfig.from_pretrained(folder, local_files_only=True)
            self.tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        except Exception as exc:
            raise ModelLoadError(
                f"reward model {label!r}: reading its config or tokenizer from {folder} failed "
                f"({type(exc).__name__}: {exc}); the folder must hold a complete Hugging Face model"
            ) from exc
        self.tokenizer.padding_side = "right"  # real tokens keep their unpadded positions in causal models
        if self.tokenizer.pad_token is None:
            if self.tokenizer.eos_token is None:
                raise ModelLoadError(f"reward model {label!r}: its tokenizer has neither a pad nor an eos token")
            self.tokenizer.pad_token = self.tokenizer.eos_token

        weights = _weight_map(folder)
        architectures = list(getattr(config, "architectures", None) or [])
        is_score_model = any(a.endswith(_SCORE_ARCHITECTURE_SUFFIX) for a in architectures)
        if is_score_model or f"{_HEAD}weight" in weights:
            self.kind = "score_model"
            self.input_format = "pku"
            self._load_score_model(folder, label, config, weights, DTYPES[dtype])
        else:
            self.kind = "sequence_classification"
            self.input_format = "chat_template" if getattr(self.tokenizer, "chat_template", None) else "text_pair"
            self._load_classifier(folder, label, config, architectures, DTYPES[dtype])
        self.model.eval().requires_grad_(False)

    # ----------------------------------------------------------------------------------------------------------
    # loading
    # ----------------------------------------------------------------------------------------------------------

    def _from_pretrained(self, auto_class: type, folder: Path, label: str, dtype: torch.dtype) -> PreTrainedModel:
        """Load with ``auto_class`` and refuse a checkpoint that leaves any weight freshly initialised."""
        try:
            with _quiet_load_report():
                model, info = auto_class.from_pretrained(
                    folder, dtype=dtype, local_files_only=True, output_loading_info=True,
                    device_map={"": self.device},
                )  # fmt: skip
        except Exception as exc:
            raise ModelLoadError(
                f"reward model {label!r}: loading the weights from {folder} failed ({type(exc).__name__}: {exc}); "
                f"the folder must hold a complete Hugging Face model"
            ) from exc
        missing = sorted(info.get("missing_keys") or [])
        if missing:
            raise ModelLoadError(
                f"reward model {label!r}: its checkpoint lacks {len(missing)} weights of "
                f"{type(model).__name__} (e.g. {', '.join(missing[:3])}), which would be random; pass a trained "
                f"reward model (one-output sequence classifier or safe-rlhf score model)"
            )
        return model

    def _load_score_model(
        self, folder: Path, label: str, config: PretrainedConfig, weights: dict[str, Path], dtype: torch.dtype
    ) -> None:
        from transformers import AutoModel

        if f"{_HEAD}weight" not in weights:
            raise ModelLoadError(
                f"reward model {label!r}: config.json names a safe-rlhf score model ({config.architectures}) but "
                f"the checkpoint holds no {_HEAD}weight; the download is incomplete or the model is not one"
            )
        self.model = self._from_pretrained(AutoModel, folder, label, dtype)
        keys = [k for k in weights if k.startswith((_HEAD, _NORMALIZER))]
        tensors = _read_tensors(weights, keys)
        weight = tensors[f"{_HEAD}weight"].float()
        if weight.ndim != 2 or weight.shape[0] != 1 or weight.shape[1] != self.model.config.hidden_size:
            raise ModelLoadError(
                f"reward model {label!r}: {_HEAD}weight has shape {tuple(weight.shape)}; expected "
                f"(1, {self.model.config.hidden_size}), a scalar score (score_dim = 1)"
            )
        bias = tensors.get(f"{_HEAD}bias")
        # The head runs in float32 on the last token's state: scores keep full precision under bf16 weights.
        self.head = torch.nn.Linear(weight.shape[1], 1, bias=bias is not None, device=self.device)
        with torch.no_grad():
            self.head.weight.copy_(weight)
            if bias is not None:
                self.head.bias.copy_(bias.float())
        self.head.requires_grad_(False)
        self.offset, self.divisor = _normalization(config, tensors)

    def _load_classifier(
        self, folder: Path, label: str, config: PretrainedConfig, architectures: list[str], dtype: torch.dtype
    ) -> None:
        from transformers import AutoModelForSequenceClassification

        if config.num_labels != 1:
            raise ModelLoadError(
                f"reward model {label!r} has num_labels = {config.num_labels} (architectures: "
                f"{', '.join(architectures) or 'none listed'}) and no safe-rlhf {_HEAD}weight; a reward model must "
                f"give one scalar: a sequence classifier with one label or a safe-rlhf score model"
            )
        self.model = self._from_pretrained(AutoModelForSequenceClassification, folder, label, dtype)
        if self.model.config.pad_token_id is None:  # needed to batch: the classifier pools the last non-pad token
            self.model.config.pad_token_id = self.tokenizer.pad_token_id

    # ----------------------------------------------------------------------------------------------------------
    # scoring
    # ----------------------------------------------------------------------------------------------------------

    def encode(self, prompts: Sequence[str], responses: Sequence[str]) -> list[list[int]]:
        """Token ids of each (prompt, response) pair in the model's input format, truncated to ``max_length``."""
        kwargs = {"truncation": True, "max_length": self.max_length}
        if self.input_format == "pku":
            eos = self.tokenizer.eos_token or ""
            texts = [PKU_PROMPT.format(prompt=p) + r + eos for p, r in zip(prompts, responses, strict=True)]
            return self.tokenizer(texts, add_special_tokens=True, **kwargs)["input_ids"]
        if self.input_format == "chat_template":
            texts = [self._chat_text(p, r) for p, r in zip(prompts, responses, strict=True)]
            return self.tokenizer(texts, add_special_tokens=False, **kwargs)["input_ids"]  # the template has them
        return self.tokenizer(list(prompts), list(responses), **kwargs)["input_ids"]

    def _chat_text(self, prompt: str, response: str) -> str:
        turns = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        text = self.tokenizer.apply_chat_template(turns, tokenize=False)
        return text if isinstance(text, str) else text[0]  # some versions wrap one conversation in a list

    def _forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.kind == "sequence_classification":
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits[:, 0].float()
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, L, E)
        last = attention_mask.sum(dim=1) - 1  # right padding: the last real token (safe-rlhf's end_index)
        end = hidden[torch.arange(hidden.shape[0], device=hidden.device), last].float()  # (B, E)
        return (self.head(end)[:, 0] - self.offset) / self.divisor

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Return one score per (prompt, response) pair, float64, shape ``(len(prompts),)``.

        Raises:
            ValueError: A pair tokenizes to no tokens at all.
        """
        ids = self.encode(prompts, responses)
        empty = [i for i, seq in enumerate(ids) if not seq]
        if empty:
            raise ValueError(f"scorer {self.name!r}: pairs {empty[:5]} tokenize to nothing; give non-empty text")
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths share a batch: less padding
        out = np.empty(len(ids), dtype=np.float64)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                batch = self.tokenizer.pad({"input_ids": [ids[i] for i in rows]}, padding=True, return_tensors="pt")
                scores = self._forward(batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device))
                out[rows] = scores.double().cpu().numpy()
        return out


def _normalization(config: PretrainedConfig, tensors: dict[str, torch.Tensor]) -> tuple[float, float]:
    """(offset, divisor) so that ``(raw - offset) / divisor`` is safe-rlhf's ``end_scores``.

    safe-rlhf's ``ScoreModelMixin`` normalises only when the config sets ``do_normalize``: ``affine`` for
    ``score_type = "reward"`` (``(x - mean) / (std + 1e-8)``), ``scale`` for ``"cost"`` (``x / (std + 1e-8)``),
    with the mean and variance of its ``normalizer`` buffers (saved in the checkpoint; the config's ``mean``
    and ``var`` otherwise).
    """
    if not getattr(config, "do_normalize", False):
        return 0.0, 1.0

    def stat(name: str, default: float) -> float:
        saved = tensors.get(f"{_NORMALIZER}{name}")
        value = saved.flatten().tolist() if saved is not None else getattr(config, name, None)
        if value is None:
            return default
        return float(value[0] if isinstance(value, list | tuple) else value)

    mean, std = stat("mean", 0.0), math.sqrt(stat("var", 1.0))
    score_type = getattr(config, "score_type", "reward")
    if score_type == "reward":
        return mean, std + 1e-8
    if score_type == "cost":
        return 0.0, std + 1e-8
    return 0.0, 1.0  # "critic": safe-rlhf's identity normalisation
