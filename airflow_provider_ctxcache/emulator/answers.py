"""Deterministic answers that depend on the prompt and on the context.

The answer is the context sentence sharing the most words with the prompt (ties: the
longest, then the earliest), followed by a short digest of (context, prompt), e.g.
``"Record 7: the archive holds ... [ctx 1a2b3c4d]"``. With no context it says so and echoes
the prompt. The same request always gets the same answer; a different prompt or a different
cached/inline context gets a different one, so tests can assert on content.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from .tokens import CHARS_PER_TOKEN, text_tokens

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"\w+")
# Words that say nothing about which sentence answers a question.
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "can",
        "do",
        "does",
        "for",
        "from",
        "has",
        "have",
        "how",
        "i",
        "in",
        "is",
        "it",
        "its",
        "may",
        "must",
        "of",
        "on",
        "or",
        "that",
        "the",
        "their",
        "then",
        "there",
        "this",
        "to",
        "was",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "you",
        "your",
    ]
)
_STEM = 6  # words are compared on their first letters, so "terminate" meets "termination"
_TIE_SCAN = 64  # tied sentences examined for the longest one
_DENSE_RATIO = 32  # a word in at least 1 of this many sentences gets its bitset at build time


def words(text: str) -> set[str]:
    """The comparable words of a text: lower-case, no stopwords, cut to a common stem."""
    return {w[:_STEM] for w in _WORD.findall(text.lower()) if w not in _STOPWORDS}


NO_CONTEXT = "No context was provided."
NO_TEXT = "The context has no text to quote."


@dataclass(frozen=True)
class Answer:
    """The text of an answer and why it stopped."""

    text: str
    finish_reason: str
    tokens: int


class ContextIndex:
    """A context's sentences and, per word, the set of sentences containing it (as a bitset).

    Built once per cache. Scoring a prompt adds one bitset per prompt word into bit-sliced
    counters and reads the maximum off the top bit-plane down, so answering costs a few
    big-integer operations per prompt word, not a pass over a (possibly million-token) context.

    Only words frequent enough to fill a bitset (one in ``_DENSE_RATIO`` sentences) get one at
    build time; rarer words (numbers, names) keep their sentence list and get their bitset when
    a prompt asks for them. Building stays linear in the text: a bitset per distinct word
    would be quadratic when most sentences carry a word of their own.
    """

    def __init__(self, text: str) -> None:
        self.sentences = [s for s in (part.strip() for part in _SENTENCE_END.split(text)) if s]
        positions: dict[str, list[int]] = {}
        for i, sentence in enumerate(self.sentences):
            for word in words(sentence):
                positions.setdefault(word, []).append(i)
        size = len(self.sentences)
        self.postings: dict[str, int] = {}
        self.rare: dict[str, list[int]] = {}
        for word, indices in positions.items():
            if len(indices) * _DENSE_RATIO >= size:
                self.postings[word] = _bitset(indices, size)
            else:
                self.rare[word] = indices
        self._everything = (1 << size) - 1

    def _sentences_with(self, word: str) -> int:
        """The bitset of the sentences containing ``word``."""
        bits = self.postings.get(word)
        if bits is not None:
            return bits
        rare = self.rare.get(word)
        return _bitset(rare, len(self.sentences)) if rare else 0

    def best(self, prompt: str) -> tuple[int, str]:
        """(score, sentence): the sentence sharing the most distinct words with the prompt.

        Ties go to the longest sentence (a clause rather than its heading), then the earliest;
        with no shared word, the first sentence (score 0); with no sentence at all, score -1.
        """
        if not self.sentences:
            return -1, ""
        planes: list[int] = []  # planes[k]: sentences whose count has bit k set
        for word in words(prompt):
            carry = self._sentences_with(word)
            level = 0
            while carry:
                if level == len(planes):
                    planes.append(carry)
                    break
                planes[level], carry = planes[level] ^ carry, planes[level] & carry
                level += 1
        candidates, score = self._everything, 0
        for level in range(len(planes) - 1, -1, -1):
            narrowed = candidates & planes[level]
            if narrowed:
                candidates, score = narrowed, score + (1 << level)
        if score == 0:
            return 0, self.sentences[0]
        return score, self._longest(candidates)

    def _longest(self, candidates: int) -> str:
        best = ""
        for _ in range(_TIE_SCAN):
            if not candidates:
                break
            lowest = candidates & -candidates
            sentence = self.sentences[lowest.bit_length() - 1]
            if len(sentence) > len(best):
                best = sentence
            candidates ^= lowest
        return best


def _bitset(indices: list[int], size: int) -> int:
    """An int with the given bits set, built in one pass."""
    bits = bytearray((size + 7) // 8)
    for i in indices:
        bits[i >> 3] |= 1 << (i & 7)
    return int.from_bytes(bits, "little")


def best_sentence(indexes: list[ContextIndex], prompt: str) -> str:
    """The best sentence across several contexts (cached first, then the request's)."""
    best_score, best = -1, ""
    for index in indexes:
        score, sentence = index.best(prompt)
        if score > best_score:
            best_score, best = score, sentence
    return best


def digest(context_digest: str, prompt: str) -> str:
    """A short stable hash of (context, prompt)."""
    return hashlib.sha256(f"{context_digest}\0{prompt}".encode()).hexdigest()[:8]


def answer(
    *,
    contexts: list[ContextIndex],
    context_digest: str,
    has_context: bool,
    prompt: str,
    json_mode: bool,
    max_output_tokens: int | None,
) -> Answer:
    """The answer to ``prompt`` given the context, shaped by the generation config."""
    tag = digest(context_digest, prompt)
    sentence = (best_sentence(contexts, prompt) or NO_TEXT) if has_context else ""
    if json_mode:
        payload = {
            "answer": sentence if has_context else f"{NO_CONTEXT} You asked: {prompt}",
            "source": "context" if has_context else "none",
            "digest": tag,
        }
        text = json.dumps(payload)
    elif has_context:
        text = f"{sentence} [ctx {tag}]"
    else:
        text = f"{NO_CONTEXT} You asked: {prompt} [ctx {tag}]"
    finish = "STOP"
    if max_output_tokens is not None and max_output_tokens > 0 and text_tokens(text) > max_output_tokens:
        text = text[: max_output_tokens * CHARS_PER_TOKEN]
        finish = "MAX_TOKENS"
    return Answer(text=text, finish_reason=finish, tokens=text_tokens(text))
