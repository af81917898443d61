import pytest

from thor_core import tir


def test_truncation_keeps_head_and_tail():
    fmt = tir.ObservationFormat(max_chars=10, head_chars=4, tail_chars=3)
    assert tir.truncate_middle("0123456789", fmt) == "0123456789"
    assert tir.truncate_middle("0123456789AB", fmt) == "0123...9AB"


def test_default_truncation_matches_authors():
    text = "x" * 100 + "y" * 200
    out = tir.truncate_middle(text)
    assert out == text[:128] + "..." + text[-128:]


def test_observation_success_failure_and_silence():
    assert tir.format_observation(True, "4\n", "") == "4"
    tb = 'Traceback (most recent call last):\n  File "<cell>", line 1\nZeroDivisionError: division by zero\n'
    assert tir.format_observation(False, "partial\n", tb) == "ZeroDivisionError: division by zero"
    assert tir.format_observation(True, "", "") == tir.DEFAULT_OBSERVATION.silent_message
    assert not tir.is_success(True, "  \n")
    assert tir.is_success(True, "", tir.ObservationFormat(require_output=False))


def test_bad_observation_format_is_refused():
    with pytest.raises(ValueError, match="head_chars"):
        tir.ObservationFormat(max_chars=10, head_chars=8, tail_chars=8)


def test_pending_code_only_for_a_just_closed_python_block():
    text = "Let me compute.\n```python\nprint(1+1)\n```\n"
    block = tir.pending_code_block(text)
    assert block.code == "print(1+1)" and text[block.start :].startswith("```python")
    assert tir.pending_code(text + "More text") is None  # something after the close
    assert tir.pending_code("```python\nprint(1)\n") is None  # still open
    assert tir.pending_code("```\n42\n```\n") is None  # a plain block
    # a closed output block after a code block is not a new code block
    assert tir.pending_code("```python\nprint(1)\n```\n```output\n1\n```\n") is None
    # a bare closer that ends an earlier block cannot open a python block
    assert tir.pending_code("```text\na\n```python\nx\n```\n") is None


def test_code_blocks_and_open_block():
    text = "a\n```python\nx = 1\n```\n```output\n\n```\nb\n```python\nprint(x)\n```\n"
    assert tir.code_blocks(text) == ["x = 1", "print(x)"]
    assert tir.in_open_code_block("```python\nx = 1\n")
    assert not tir.in_open_code_block(text)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so \\boxed{42}.", "42"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("first \\boxed{1} then \\boxed{2}", "2"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("\\boxed{(1, {2})}", "(1, {2})"),
        ("\\fbox{7}", "7"),
        ("\\boxed 5", "5"),
        ("\\boxed{}", None),
        ("\\boxed{3", None),
        ("no box", None),
        ("\\boxed{2} and \\boxed{}", "2"),
    ],
)
def test_last_boxed(text, expected):
    assert tir.last_boxed(text) == expected


def test_prompts(qwen_tokenizer):
    with pytest.raises(ValueError, match="tir"):
        tir.build_messages("q", "bogus")
    rendered = tir.render_prompt(qwen_tokenizer, "What is 1+1?", "tir")
    assert "What is 1+1?" in rendered and "```python" in rendered
    assert rendered.rstrip().endswith("assistant")
    assert "python" not in tir.render_prompt(qwen_tokenizer, "What is 1+1?", "cot")
