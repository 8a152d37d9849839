"""The emulator's token-count rule and the modality each token is counted under.

The rule (used for cache sizes, countTokens, usageMetadata and the minimum check alike):

- a text part counts ``ceil(characters / 4)`` tokens (characters are Unicode code points),
  at least 1 for a non-empty text, 0 for an empty one;
- an ``inlineData`` part counts ``ceil(decoded bytes / 4)`` tokens;
- a ``fileData`` part counts by the real size of what it points at, under the same two rules
  (``text/*`` MIME types: ``ceil(characters / 4)`` of its UTF-8 text; any other type:
  ``ceil(bytes / 4)``), when the emulator can see it: an uploaded file on the Developer API
  (its ``uri`` or ``files/<id>``), or on Vertex a ``gs://`` object read through the Cloud
  Storage emulator named by ``STORAGE_EMULATOR_HOST`` (see :mod:`.sources`). Any other
  ``fileData`` (an https URL, ``gs://`` with no storage emulator) counts a flat 258 tokens
  (what Gemini charges for one image). The MIME type is the part's, else the file's. A text
  file's text also joins the context answers are drawn from; files never count towards the
  10 MiB inline limit, which counts inline bytes and text only;
- any other part (functionCall, functionResponse, ...) counts
  ``ceil(len(compact JSON of the part) / 4)``;
- the system instruction counts like contents; ``tools`` and ``toolConfig`` count
  ``ceil(len(compact sorted JSON) / 4)`` each.

Each count also has a modality (usageMetadata's ``promptTokensDetails`` and
``cacheTokensDetails``): text parts, structured parts, tools and the system instruction are
``TEXT``; inline data and files go by their MIME type (:func:`modality_of`).

It is deliberately simple so tests can build content of an exact size: see
:func:`text_of_tokens`. The per-model minimum cache sizes are in :mod:`.models`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

CHARS_PER_TOKEN = 4
FILE_DATA_TOKENS = 258

TEXT = "TEXT"
IMAGE = "IMAGE"
AUDIO = "AUDIO"
VIDEO = "VIDEO"
DOCUMENT = "DOCUMENT"
# The order usageMetadata lists modalities in.
MODALITIES: tuple[str, ...] = (TEXT, IMAGE, AUDIO, VIDEO, DOCUMENT)

_FILLER = (
    "the archive holds records of ships cargo ports and weather across many seasons "
    "each ledger names a captain a route a date and the goods carried between harbours"
)


def text_tokens(text: str) -> int:
    """Tokens of one text part."""
    return math.ceil(len(text) / CHARS_PER_TOKEN) if text else 0


def bytes_tokens(size: int) -> int:
    """Tokens of inline data of ``size`` decoded bytes."""
    return math.ceil(size / CHARS_PER_TOKEN)


def file_tokens(size: int, text: str | None) -> int:
    """Tokens of a file a ``fileData`` part points at: its text if it is text, else its bytes."""
    return text_tokens(text) if text is not None else bytes_tokens(size)


def json_tokens(value: Any) -> int:
    """Tokens of a structured value (tools, tool config, function calls) by its JSON length."""
    return math.ceil(len(json.dumps(value, separators=(",", ":"), sort_keys=True)) / CHARS_PER_TOKEN)


def text_of_tokens(n: int) -> str:
    """A readable text of exactly ``n`` tokens under this module's rule (4 * n characters).

    Sentences are numbered ("Record 7 ...") so every sentence is distinct, which makes the
    deterministic answers of :mod:`answers` point at one sentence.
    """
    if n <= 0:
        return ""
    target = n * CHARS_PER_TOKEN
    vocabulary = _FILLER.split()
    pieces: list[str] = []
    length = 0
    i = 0
    while length < target:
        words = " ".join(vocabulary[(i + k) % len(vocabulary)] for k in range(8))
        sentence = f"Record {i + 1}: {words}. "
        pieces.append(sentence)
        length += len(sentence)
        i += 1
    text = "".join(pieces)[:target]
    return text[:-1] + "." if text.endswith(" ") else text


def part_tokens(part: Mapping[str, Any], inline_size: int) -> int:
    """Tokens of one part; ``inline_size`` is the decoded size of its inline data, if any."""
    if "text" in part:
        return text_tokens(str(part["text"]))
    if "inlineData" in part or "inline_data" in part:
        return bytes_tokens(inline_size)
    if "fileData" in part or "file_data" in part:
        return FILE_DATA_TOKENS  # unresolved; a resolved file counts by file_tokens()
    return json_tokens(part)


def modality_of(mime_type: str) -> str:
    """The modality a part of this MIME type is counted under; anything else is a DOCUMENT.

    ``text/*`` (and a part with no MIME type) is TEXT, ``image/*`` IMAGE, ``audio/*`` AUDIO,
    ``video/*`` VIDEO; PDFs and other application types are DOCUMENT.
    """
    kind = mime_type.lower().split("/", 1)[0]
    return {"": TEXT, "text": TEXT, "image": IMAGE, "audio": AUDIO, "video": VIDEO}.get(kind, DOCUMENT)


def modality_details(counts: Mapping[str, int]) -> list[dict[str, Any]]:
    """``[{"modality", "tokenCount"}, ...]`` as usageMetadata lists them (zero counts left out)."""
    return [{"modality": m, "tokenCount": counts[m]} for m in MODALITIES if counts.get(m)]
