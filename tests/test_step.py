"""The pure parts of a decoding step: the tree batch layout, text streaming, statistics."""
import numpy as np
import pytest

from mtpchat import policy as P
from mtpchat.stats import Stats
from mtpchat.step import tree_batch
from mtpchat.textstream import StopFilter, TextStream

MASKS = [900, 901, 902]


def test_chain_without_blocks_is_one_sequence():
    b = tree_batch([5, 6, 7], (), 0, MASKS, p0=10)
    assert b.tokens == [5, 6, 7] and b.pos == [10, 11, 12] and b.seqs is None and b.block_seq == {}


def test_quadratic_tree_layout():
    # quadratic:2 at position 4: chain t0 d1 d2, a block of 2 masks after every chain node
    t = P.quadratic(2)
    b = tree_batch([50, 51, 52], t.blocks, t.n_masks, MASKS, p0=4)
    assert b.tokens == [50, 51, 52, 900, 901, 900, 901, 900, 901]
    # a block after node i sits right after it: positions i+1, i+2
    assert b.pos == [4, 5, 6, 5, 6, 6, 7, 7, 8]
    # chain node i is seen by seq 0 and by every block anchored at a node >= i
    assert b.seqs[:3] == [[0, 1, 2, 3], [0, 2, 3], [0, 3]]
    assert b.seqs[3:] == [[1], [1], [2], [2], [3], [3]]
    assert b.block_seq == {0: 1, 1: 2, 2: 3}
    assert [b.block_row(i) for i in range(3)] == [3, 5, 7]
    assert len(b.tokens) == t.n_tokens


def test_linear_tree_layout_and_masks_only_step():
    t = P.linear(2)
    b = tree_batch([50, 51, 52], t.blocks, t.n_masks, MASKS, p0=0)
    assert b.seqs == [[0, 1], [0, 1], [0, 1], [1], [1]] and b.pos[3:] == [3, 4] and b.block_row(2) == 3
    m = P.masks_only(3)
    b = tree_batch([50], m.blocks, m.n_masks, MASKS, p0=7)
    assert b.tokens == [50, 900, 901, 902] and b.pos == [7, 8, 9, 10] and b.seqs == [[0, 1], [1], [1], [1]]


def test_prompt_pass_puts_the_prompt_before_the_tree_without_outputs():
    # the prompt pass: prompt tokens 30, 31 at positions 5, 6, then a masks-only step for t0 = 32
    m = P.masks_only(2)
    b = tree_batch([32], m.blocks, m.n_masks, MASKS, p0=5, prefix=[30, 31])
    assert b.tokens == [30, 31, 32, 900, 901] and b.pos == [5, 6, 7, 8, 9]
    # every block sees the prompt; only the tree's rows are outputs, so block rows keep their index
    assert b.seqs == [[0, 1], [0, 1], [0, 1], [1], [1]] and b.outputs == [0, 0, 1, 1, 1]
    assert b.block_row(0) == 1
    plain = tree_batch([32], (), 0, MASKS, p0=5, prefix=[30, 31])
    assert plain.seqs is None and plain.outputs == [0, 0, 1] and plain.pos == [5, 6, 7]


def _stream(pieces, stops=()):
    ts = TextStream(lambda t: pieces[t], stops)
    out = []
    for i in range(len(pieces)):
        text, stopped = ts.push(i)
        out.append(text)
        if stopped:
            return "".join(out), True
    return "".join(out) + ts.flush(), False


def test_utf8_split_across_tokens_and_invalid_bytes_lose_nothing():
    s = "日本語".encode()
    assert _stream([s[:2], s[2:5], s[5:]]) == ("日本語", False)
    # an invalid byte becomes U+FFFD and the text after it still comes out
    assert _stream([b"ab\xff", b"cd", "é".encode()]) == ("ab\ufffdcdé", False)
    # a character cut off at the end of the answer is flushed as U+FFFD
    assert _stream([b"ok", s[:2]]) == ("ok\ufffd", False)


def test_stop_strings_hold_back_only_what_may_match():
    assert _stream([b"Hello ", b"wor", b"ld###", b"never"], ("###",)) == ("Hello world", True)
    # a held prefix of a stop string that never completes is printed at the end
    assert _stream([b"a #", b"#"], ("###",)) == ("a ##", False)
    f = StopFilter(("END",))
    assert f.push("xxE") == ("xx", False) and f.push("N") == ("", False) and f.push("x") == ("ENx", False)


def test_stats_merge_adds_every_field():
    a, b = Stats(tokens=3, steps=2, gen_s=0.5, decode_s=0.25), Stats(tokens=5, steps=1, gen_s=0.5, pass_1_s=0.01)
    a.count_drafts(2, 1)
    b.count_drafts(1, 0)
    a.by_source["mtp"] += 1
    b.by_source["mtp"] += 2
    b.trees["plain"] += 1
    total = Stats().merge(a).merge(b)
    assert (total.tokens, total.steps, total.gen_s, total.decode_s) == (8, 3, 1.0, 0.25)
    assert total.acceptance() == [0.5, 0.0] and total.by_source["mtp"] == 3 and total.trees == {"plain": 1}
    assert total.pass_1_s == 0.01 and total.tau == pytest.approx(8 / 3)
    assert a.offered[:3] == [1, 1, 0]  # merging leaves the parts alone
