"""TIRGen records as SFT data: token-exact examples under the kit's TIR prompt.

Each kept record becomes one example:

- ``input_ids`` = the TIR inference prompt for the record's question
  (``tir.render_prompt(tokenizer, question, "tir")``, re-rendered: the actor
  may have written under another prompt) + the record's ``completion_ids``
  unchanged + one end-of-turn token when the completion does not already end
  with one (a record that stopped at its boxed answer), so the model learns to
  stop;
- ``labels`` = ``input_ids`` with -100 on the prompt; unshifted, as transformers expects;
- ``tool_output_mask`` = 1 on the inserted ```output blocks (tokens whose source is ``t``), 0 elsewhere: whether
  they are trained on is SFT's one setting (``SFTParams.mask_tool_outputs``, applied by ``thor_core.sft.train``);
- ``messages`` = the same example as chat messages (system, user, assistant)
  for users of other trainers; plus ``question_id``, ``n_calls``, ``kind``,
  ``level`` for analysis.

TRL 1.16's SFTTrainer takes ``input_ids`` + ``labels`` as given (a
``completion_mask`` column would be silently ignored without prompt/completion
columns: docs/TESTING.md, "The environment"), so that is what is emitted.

The ids mean something only under the tokenizer that made them, so the
export also writes ``tokenizer_fingerprint.json`` (the vocabulary hashed) and
``check_tokenizer`` refuses a model whose tokenizer differs: a run would
otherwise train on garbage without a word.

Not covered: packing and truncation (the trainer's job, ``thor_core.sft.train``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from thor_core import tir
from thor_core.backends.base import eos_ids_of
from thor_core.record import Trajectory

IGNORE = -100
FINGERPRINT = "tokenizer_fingerprint.json"
COLUMNS = ("input_ids", "labels", "tool_output_mask", "messages", "question_id", "n_calls", "kind", "level")


def end_of_turn_id(tokenizer) -> int:
    """The id that ends an assistant turn: ``<|im_end|>`` where the template has it, else EOS."""
    tid = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(tid, int) and tid >= 0 and tid != tokenizer.unk_token_id:
        return tid
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has neither <|im_end|> nor an EOS token: cannot end SFT examples")
    return tokenizer.eos_token_id


def tool_output_flags(record: Trajectory) -> list[int]:
    """1 for each completion token inside an inserted output block, else 0."""
    if record.token_sources is not None:
        return [int(s == "t") for s in record.token_sources]
    flags = [0] * len(record.completion_ids)
    for call in record.tool_calls:
        for i in range(*call.output_span):
            flags[i] = 1
    return flags


def sft_example(record: Trajectory, tokenizer) -> dict[str, Any]:
    """One tokenised example (see the module docstring)."""
    prompt_ids = tokenizer.encode(tir.render_prompt(tokenizer, record.question, "tir"), add_special_tokens=False)
    completion = list(record.completion_ids)
    tool = tool_output_flags(record)
    if not completion or completion[-1] not in eos_ids_of(tokenizer):
        completion.append(end_of_turn_id(tokenizer))
        tool.append(0)
    labels = [IGNORE] * len(prompt_ids) + completion
    text = tokenizer.decode(record.completion_ids, skip_special_tokens=True)
    return {
        "input_ids": prompt_ids + completion,
        "labels": labels,
        "tool_output_mask": [0] * len(prompt_ids) + tool,
        "messages": [*tir.build_messages(record.question, "tir"), {"role": "assistant", "content": text}],
        "question_id": record.question_id,
        "n_calls": record.n_calls,
        "kind": str(record.metadata.get("kind", "")),
        "level": int(record.metadata.get("level", 0) or 0),
    }


def features():
    """The dataset's schema, explicit so that an empty export saves and loads like a full one."""
    import datasets

    ints = datasets.Sequence(datasets.Value("int64"))
    message = {"role": datasets.Value("string"), "content": datasets.Value("string")}
    return datasets.Features(
        input_ids=ints, labels=ints, tool_output_mask=ints, messages=[message],
        question_id=datasets.Value("string"), n_calls=datasets.Value("int64"),
        kind=datasets.Value("string"), level=datasets.Value("int64"),
    )  # fmt: skip


def sft_dataset(records: Iterable[Trajectory], tokenizer):
    """A ``datasets.Dataset`` of ``sft_example`` rows (columns ``COLUMNS``)."""
    import datasets

    rows = [sft_example(r, tokenizer) for r in records]
    if not rows:
        return datasets.Dataset.from_dict({c: [] for c in COLUMNS}, features=features())
    return datasets.Dataset.from_list(rows, features=features())


def save_sft_dataset(records: Iterable[Trajectory], tokenizer, folder: str | os.PathLike):
    """Write the dataset with ``save_to_disk`` (atomically: a temp folder renamed into place)."""
    import shutil

    import datasets

    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    dataset = sft_dataset(records, tokenizer)
    bars = not datasets.utils.are_progress_bars_disabled()
    datasets.utils.disable_progress_bars()  # a bar for a save of a few hundred rows is noise in a notebook's output
    try:
        dataset.save_to_disk(str(tmp), num_shards=1 if len(dataset) == 0 else None)  # 0 shards would not load back
    finally:
        if bars:
            datasets.utils.enable_progress_bars()
    (tmp / FINGERPRINT).write_text(json.dumps(tokenizer_fingerprint(tokenizer), indent=1) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return dataset


def load_sft_dataset(folder: str | os.PathLike):
    """The dataset ``save_sft_dataset`` wrote; a clear error when the folder is not one."""
    import datasets

    folder = Path(folder)
    if not (folder / "dataset_info.json").exists() and not (folder / "state.json").exists():
        raise FileNotFoundError(
            f"no TIRGen SFT dataset at {folder}: run notebooks/01_tirgen.ipynb first "
            "(python -m thor_core.runs 01_tirgen --profile cpu), or point the dataset parameter at its sft/ folder"
        )
    dataset = datasets.load_from_disk(str(folder))
    missing = {"input_ids", "labels"} - set(dataset.column_names)
    if missing:
        raise ValueError(f"{folder} is not a TIRGen SFT dataset: columns {sorted(missing)} are missing")
    return dataset


def tokenizer_fingerprint(tokenizer) -> dict:
    """What the export's ids mean: the vocabulary (token -> id, added tokens included) hashed, its size, a name."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    digest = hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()
    return {"name_or_path": str(tokenizer.name_or_path), "vocab_size": len(vocab), "vocab_sha256": digest}


def check_tokenizer(folder: str | os.PathLike, tokenizer, model: str = "the model") -> None:
    """Refuse to train ``model`` on an export whose ids were made by another tokenizer.

    A dataset without a fingerprint (an export from before this check, or a user's own) is not checked.
    """
    path = Path(folder) / FINGERPRINT
    if not path.exists():
        return
    made_with = json.loads(path.read_text())
    if made_with["vocab_sha256"] != tokenizer_fingerprint(tokenizer)["vocab_sha256"]:
        raise ValueError(
            f"the SFT dataset at {folder} was tokenised by {made_with['name_or_path']} "
            f"({made_with['vocab_size']} tokens), not by the tokenizer of {model} ({len(tokenizer)} tokens): "
            "train the model the TIRGen actor was (notebook 01's actor_model), or re-export the dataset with "
            "this model's tokenizer"
        )
