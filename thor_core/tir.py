"""The tool-integrated reasoning (TIR) text format.

Covers: the code and output fences, finding the code block the policy just
closed, the success rule for a code call, turning a call's result into the
observation the model is shown (head+tail truncation), rendering the
```output block, extracting the last ``\\boxed{}`` answer (nested braces), and
the prompts (TIR for non-reasoning models, plain chain-of-thought).

Not covered: running code (``thor_core.sandbox``), token bookkeeping
(``thor_core.engine``), answer equivalence (``thor_core.grading``).

A trajectory looks like::

    ...reasoning...
    ```python
    print(2 + 2)
    ```
    ```output
    4
    ```
    ...more reasoning... \\boxed{4}
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CODE_FENCE = "```python"
OUTPUT_FENCE = "```output"
CLOSE_FENCE = "```"

# A fence line: three backticks and an optional language tag at a line start.
_FENCE_LINE = re.compile(r"(?m)^[ \t]*```([A-Za-z0-9_+-]*)[ \t]*$")
CODE_LANGS = frozenset({"python", "py", "python3"})


@dataclass(frozen=True)
class ObservationFormat:
    """How a code call's result is shown to the model.

    Defaults follow the authors' code: over ``max_chars`` characters the text is
    cut to the first ``head_chars`` + marker + last ``tail_chars``.
    """

    max_chars: int = 256
    head_chars: int = 128
    tail_chars: int = 128
    marker: str = "..."
    require_output: bool = True  # silent code counts as a failed call (authors' rule)
    silent_message: str = "Error: the code ran but printed nothing; print the result."

    def __post_init__(self) -> None:
        if self.max_chars < 1 or self.head_chars < 0 or self.tail_chars < 0:
            raise ValueError(
                f"ObservationFormat: max_chars must be >= 1 and head/tail >= 0, got "
                f"max_chars={self.max_chars}, head_chars={self.head_chars}, tail_chars={self.tail_chars}"
            )
        if self.head_chars + self.tail_chars > self.max_chars:
            raise ValueError(
                "ObservationFormat: head_chars + tail_chars must not exceed max_chars "
                f"({self.head_chars} + {self.tail_chars} > {self.max_chars})"
            )


DEFAULT_OBSERVATION = ObservationFormat()


def truncate_middle(text: str, fmt: ObservationFormat = DEFAULT_OBSERVATION) -> str:
    """Keep head and tail of ``text`` when it is longer than ``fmt.max_chars``."""
    if len(text) <= fmt.max_chars:
        return text
    tail = text[len(text) - fmt.tail_chars :] if fmt.tail_chars else ""
    return text[: fmt.head_chars] + fmt.marker + tail


def is_success(exited_cleanly: bool, stdout: str, fmt: ObservationFormat = DEFAULT_OBSERVATION) -> bool:
    """The kit's success rule: a clean exit and (by default) something printed."""
    return exited_cleanly and (bool(stdout.strip()) or not fmt.require_output)


def last_error_line(stderr: str) -> str:
    """The last non-empty line of a traceback (``ZeroDivisionError: division by zero``)."""
    for line in reversed(stderr.splitlines()):
        if line.strip():
            return line.strip()
    return "Error: the code failed without a message."


def format_observation(
    exited_cleanly: bool, stdout: str, stderr: str, fmt: ObservationFormat = DEFAULT_OBSERVATION
) -> str:
    """What the model sees for one call: stdout on success, else the last error line."""
    if is_success(exited_cleanly, stdout, fmt):
        return truncate_middle(stdout.strip("\n"), fmt)
    if exited_cleanly:  # clean exit, but printed nothing
        return fmt.silent_message
    return truncate_middle(last_error_line(stderr), fmt)


def render_output_block(observation: str) -> str:
    """The ```output block inserted after a code block (the policy never writes it).

    The block opens on a new line, so the text before it should end with the
    closing code fence (and optionally a newline); the result ends with a
    newline so the policy continues on a fresh line.
    """
    return f"{OUTPUT_FENCE}\n{observation}\n{CLOSE_FENCE}\n"


def output_block_prefix(text_so_far: str) -> str:
    """The separator needed between the policy's text and an output block."""
    return "" if text_so_far.endswith("\n") else "\n"


def fence_lines(text: str) -> list[tuple[int, int, str]]:
    """Every fence line of ``text``, in order: (start, end, language in lower case, "" for a bare fence)."""
    return [(m.start(), m.end(), m.group(1).lower()) for m in _FENCE_LINE.finditer(text)]


@dataclass(frozen=True)
class CodeBlock:
    start: int  # character offset of the opening fence
    end: int  # character offset just past the closing fence
    code: str


def pending_code_block(text: str) -> CodeBlock | None:
    """The ```python block that ``text`` has just closed, else None.

    "Just closed" means: the last fence in ``text`` is a bare closing fence, the
    fence before it opens a python block, and nothing but whitespace follows the
    closing fence. This is what the engine checks after each generated segment.
    """
    fences = fence_lines(text)
    if len(fences) < 2:
        return None
    (open_start, open_end, lang), (close_start, close_end, close_lang) = fences[-2], fences[-1]
    if close_lang or lang not in CODE_LANGS or text[close_end:].strip():
        return None
    if _is_inside_block(fences[:-2]):  # the "opener" is really the closer of an earlier block
        return None
    return CodeBlock(start=open_start, end=close_end, code=text[open_end:close_start].strip("\n"))


def pending_code(text: str) -> str | None:
    """The code of the block ``text`` has just closed (see ``pending_code_block``), else None."""
    block = pending_code_block(text)
    return block.code if block else None


def _is_inside_block(fences: list[tuple[int, int, str]]) -> bool:
    """Whether the fences so far leave a block open (openers and closers alternate)."""
    return len(fences) % 2 == 1


def code_blocks(text: str) -> list[str]:
    """Every complete ```python block in ``text``, in order."""
    fences = fence_lines(text)
    blocks = []
    for i in range(0, len(fences) - 1, 2):
        (_, open_end, lang), (close_start, _, close_lang) = fences[i], fences[i + 1]
        if lang in CODE_LANGS and not close_lang:
            blocks.append(text[open_end:close_start].strip("\n"))
    return blocks


def in_open_code_block(text: str) -> bool:
    """Whether ``text`` ends inside an unclosed ```python block."""
    fences = fence_lines(text)
    return _is_inside_block(fences) and fences[-1][2] in CODE_LANGS


_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")


def boxed_answers(text: str) -> list[str]:
    """Contents of every ``\\boxed{...}`` / ``\\fbox{...}`` in order, braces balanced.

    ``\\boxed 5`` (no braces) yields the next token. Unbalanced boxes are skipped.
    """
    answers = []
    for m in _BOXED.finditer(text):
        i = m.end()
        if i < len(text) and text[i] == "{":
            depth, j = 0, i
            while j < len(text):
                c = text[j]
                if c == "\\" and j + 1 < len(text):
                    j += 2
                    continue
                if c == "{":
                    depth += 1
                elif c == "}":
                    depth -= 1
                    if depth == 0:
                        answers.append(text[i + 1 : j].strip())
                        break
                j += 1
        elif m.group(0).endswith(" ") or m.group(0).endswith("\t"):
            token = re.match(r"[^\s$]+", text[i:])
            if token:
                answers.append(token.group(0))
    return answers


def last_boxed(text: str) -> str | None:
    """The last boxed answer in ``text``, or None if there is none (empty boxes count as none)."""
    for answer in reversed(boxed_answers(text)):
        if answer:
            return answer
    return None


# ---------------------------------------------------------------- prompts
# Our own wording of the two prompt styles the paper evaluates with.

TIR_SYSTEM_PROMPT = (
    "You are a careful mathematician who solves problems by mixing step-by-step "
    "reasoning with Python. Whenever a step needs computation, equation solving, "
    "enumeration or symbolic algebra, write it as a ```python code block that prints "
    "its result; the printed output will be shown to you in an ```output block. "
    "Use the output to continue reasoning. Give the final answer in \\boxed{}."
)

COT_SYSTEM_PROMPT = "You are a careful mathematician. Reason step by step and give the final answer in \\boxed{}."

PROMPT_MODES = ("tir", "cot")


def build_messages(question: str, mode: str = "tir") -> list[dict[str, str]]:
    """Chat messages for a question in ``mode`` ('tir' or 'cot')."""
    if mode not in PROMPT_MODES:
        raise ValueError(f"prompt mode must be one of {PROMPT_MODES}, got {mode!r}")
    system = TIR_SYSTEM_PROMPT if mode == "tir" else COT_SYSTEM_PROMPT
    return [{"role": "system", "content": system}, {"role": "user", "content": question}]


def render_prompt(tokenizer, question: str, mode: str = "tir") -> str:
    """The chat-templated prompt text, ending where the assistant starts writing."""
    return tokenizer.apply_chat_template(build_messages(question, mode), tokenize=False, add_generation_prompt=True)
