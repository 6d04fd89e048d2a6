"""Tokenization boundaries on the real SmolLM2 tokenizer, BOS/EOS, truncation, the cache, the collator and sampler."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings, strategies as st

from preftune.config import DataConfig
from preftune.data.batch import ConsecutiveBatches, LengthGroupedBatches, collate, collate_padded, pack_rows, pair_length
from preftune.data.cache import tokenize_examples
from preftune.data.pipeline import load_examples
from preftune.data.records import PreferencePair
from preftune.data.tokenize import PairTokenizer

from ..conftest import shared_file


def test_response_mask_covers_exactly_the_response_tokens_on_hh_pairs(smol_tokenizer) -> None:
    loaded = load_examples(str(shared_file("hh-rlhf-harmless", "test.jsonl")), DataConfig(on_error="skip").load_settings())
    tok = PairTokenizer(smol_tokenizer, DataConfig(max_length=None, max_prompt_length=None).tokenize_settings())
    eos = smol_tokenizer.eos_token_id
    for ex in loaded.examples:
        t = tok(ex)
        for resp, text in ((t.chosen, ex.chosen), (t.rejected, ex.rejected)):
            assert resp[-1] == eos and resp.count(eos) == 1
            assert t.prompt + resp[:-1] == smol_tokenizer(ex.prompt + text, add_special_tokens=False).input_ids
        assert smol_tokenizer.decode(t.prompt) == ex.prompt


def test_boundary_is_found_on_ids_when_characters_merge_across_it(smol_tokenizer) -> None:
    # "Assistant:" + "!!" — the prompt's last characters can merge with the response's first ones
    ex = PreferencePair("Say it loud", "!!! yes", "?? no")
    t = PairTokenizer(smol_tokenizer, DataConfig().tokenize_settings())(ex)
    full_c = smol_tokenizer("Say it loud!!! yes", add_special_tokens=False).input_ids
    assert t.prompt + t.chosen[:-1] == full_c
    assert t.prompt == full_c[: len(t.prompt)]


def test_chat_template_for_conversational_data_has_one_bos_and_eos_closes_each_response(smol_tokenizer) -> None:
    ex = PreferencePair([{"role": "user", "content": "What is 3 + 4?"}], [{"role": "assistant", "content": "7"}], [{"role": "assistant", "content": "8"}])
    t = PairTokenizer(smol_tokenizer, DataConfig().tokenize_settings())(ex)
    bos, eos = smol_tokenizer.bos_token_id, smol_tokenizer.eos_token_id
    assert t.prompt[0] == bos and smol_tokenizer.decode(t.prompt).endswith("<|im_start|>assistant\n")
    assert smol_tokenizer.decode(t.chosen) == "7<|im_end|>" and smol_tokenizer.decode(t.rejected) == "8<|im_end|>"
    assert t.chosen[-1] == eos and t.rejected[-1] == eos


@pytest.mark.parametrize("mode,templated", [("always", True), ("never", False), ("auto", False)])
def test_chat_template_modes_for_standard_prompts(smol_tokenizer, mode: str, templated: bool) -> None:
    t = PairTokenizer(smol_tokenizer, DataConfig(chat_template=mode).tokenize_settings())(PreferencePair("What is 3 + 4?", "7", "8"))
    assert ("<|im_start|>user" in smol_tokenizer.decode(t.prompt)) == templated


def test_truncation_keeps_prompt_end_and_response_start_and_counts(smol_tokenizer) -> None:
    prompt = " ".join(f"w{i}" for i in range(200))
    tok = PairTokenizer(smol_tokenizer, DataConfig(chat_template="never", max_length=60, max_prompt_length=40).tokenize_settings())
    t = tok(PreferencePair(prompt, " alpha beta gamma " * 20, " delta"))
    assert len(t.prompt) == 40 and smol_tokenizer.decode(t.prompt).endswith("w199")
    assert len(t.prompt) + len(t.chosen) <= 60 and smol_tokenizer.decode(t.chosen).startswith(" alpha beta")
    assert tok.counts == {"prompt truncated": 1, "response truncated": 1}
    tight = PairTokenizer(smol_tokenizer, DataConfig(chat_template="never", max_length=10, max_prompt_length=None).tokenize_settings())
    assert tight(PreferencePair(prompt, " a", " b")) is None and tight.counts == {"dropped: prompt fills max_length": 1}


def test_tokenized_cache_is_reused_and_keyed_by_settings(smol_tokenizer, tmp_path: Path, caplog) -> None:
    exs = load_examples("builtin:arithmetic", DataConfig(builtin_size=300).load_settings()).examples
    first = tokenize_examples(exs, smol_tokenizer, DataConfig().tokenize_settings(), num_proc=2, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    with caplog.at_level(logging.INFO, logger="preftune.data"):
        again = tokenize_examples(exs, smol_tokenizer, DataConfig().tokenize_settings(), num_proc=1, cache_dir=tmp_path)
    assert "loaded from cache" in caplog.text and again == first
    tokenize_examples(exs, smol_tokenizer, DataConfig(max_length=64).tokenize_settings(), cache_dir=tmp_path)
    tokenize_examples(exs[:-1], smol_tokenizer, DataConfig().tokenize_settings(), cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 3


def test_padded_collator_labels_are_the_next_tokens_of_the_response(smol_tokenizer) -> None:
    exs = load_examples("builtin:arithmetic", DataConfig(builtin_size=8).load_settings()).examples[:4]
    tok = PairTokenizer(smol_tokenizer, DataConfig().tokenize_settings())
    pairs = [tok(e) for e in exs]
    b = collate_padded(pairs, range(4), pad_id=smol_tokenizer.pad_token_id)
    assert b.input_ids.shape[0] == 8 and b.num_pairs == 4
    assert torch.equal(b.input_ids[b.rows, b.cols + 1], b.labels)
    assert b.lengths.tolist() == [len(p.chosen) for p in pairs] + [len(p.rejected) for p in pairs]
    assert b.attention_mask[b.rows, b.cols + 1].all()


def test_length_grouped_batches_cut_padding_and_cover_every_index() -> None:
    lengths = [(i * 37) % 200 + 5 for i in range(400)]
    sampler = LengthGroupedBatches(lengths, batch_size=8, seed=0)
    batches = sampler.batches(epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(400))
    padded = lambda bs: sum(max(lengths[i] for i in b) * len(b) for b in bs)  # noqa: E731
    random_batches = [list(range(k, k + 8)) for k in range(0, 400, 8)]
    assert padded(batches) < 0.7 * padded(random_batches)
    assert sampler.batches(0) == batches and sampler.batches(1) != batches


def test_length_grouped_batches_sizes_drop_last_and_unshuffled_order() -> None:
    lengths = [5, 50, 7, 30, 9, 40, 11]
    plain = LengthGroupedBatches(lengths, batch_size=3, seed=0, shuffle=False)
    assert plain.batches(0) == [[0, 1, 2], [3, 4, 5], [6]] and len(plain) == 3
    dropped = LengthGroupedBatches(lengths, batch_size=3, seed=0, shuffle=False, drop_last=True)
    assert dropped.batches(0) == [[0, 1, 2], [3, 4, 5]] and len(dropped) == 2
    shuffled = LengthGroupedBatches(lengths, batch_size=3, seed=0, group=1)
    assert all(sorted(b, key=lambda i: -lengths[i]) == b for b in shuffled.batches(0))  # longest first inside a mega-batch
    assert len(LengthGroupedBatches(lengths[:6], batch_size=3, seed=0)) == 2


def test_consecutive_batches_keep_each_batch_whole_and_shuffle_their_order() -> None:
    plain = ConsecutiveBatches(10, batch_size=4, seed=0, shuffle=False)
    assert plain.batches(0) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]] and len(plain) == 3
    dropped = ConsecutiveBatches(10, batch_size=4, seed=0, shuffle=False, drop_last=True)
    assert dropped.batches(0) == [[0, 1, 2, 3], [4, 5, 6, 7]] and len(dropped) == 2
    assert len(ConsecutiveBatches(8, batch_size=4, seed=0)) == 2
    shuffled = ConsecutiveBatches(40, batch_size=4, seed=3)
    epochs = [shuffled.batches(e) for e in range(3)]
    assert all(sorted(map(tuple, b)) == sorted(map(tuple, plain_b)) for b, plain_b in
               zip(epochs, [ConsecutiveBatches(40, 4, 3, shuffle=False).batches(0)] * 3))  # the same whole batches
    assert epochs[0] != epochs[1] and shuffled.batches(0) == epochs[0]  # another order each epoch, fixed by (seed, epoch)


def test_inspect_cli_json_on_hh(tmp_path: Path) -> None:
    path = shared_file("hh-rlhf-harmless", "test.jsonl")
    out = subprocess.run([sys.executable, "-m", "preftune", "data", "inspect", str(path), "--json", "data.on_error=skip"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["format"] == "implicit_prompt" and report["records_read"] == 200
    assert 0 < report["length_bias"]["chosen_longer"] < 1 and report["lengths"]["prompt"]["max"] > 0


def test_inspect_cli_reports_a_bad_file_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": 1}\n')
    out = subprocess.run([sys.executable, "-m", "preftune", "data", "inspect", str(bad)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr and "bad.jsonl" in out.stderr


def test_inspect_truncation_counts_equal_what_training_tokenization_counts(smol_tokenizer, tmp_path: Path) -> None:
    from preftune.config import load_config
    from preftune.data.inspect import inspect_data

    path = str(shared_file("hh-rlhf-harmless", "test.jsonl"))
    cfg = load_config(None, ["data.on_error=skip", "data.max_length=200", "data.max_prompt_length=120", "data.num_proc=1"]).data
    report = inspect_data(cfg.settings(train=[path]), smol_tokenizer)["truncation"]
    examples = load_examples(path, DataConfig(on_error="skip").load_settings()).examples
    _, _, counts = tokenize_examples(examples, smol_tokenizer, cfg.tokenize_settings(), cache_dir=tmp_path)
    assert report["prompts_truncated"] == counts.get("prompt truncated", 0) > 0
    assert report["responses_truncated"] == counts.get("response truncated", 0) > 0
    assert report["pairs_dropped"] == sum(n for k, n in counts.items() if k.startswith("dropped"))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 1200), min_size=1, max_size=40), st.integers(16, 2048))
def test_packed_rows_hold_every_segment_once_within_the_row_size(lengths: list[int], row_tokens: int) -> None:
    rows = pack_rows(lengths, row_tokens)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    cap = max(row_tokens, max(lengths))
    assert all(sum(lengths[i] for i in row) <= cap for row in rows)


def fewest_rows(lengths: list[int], cap: int) -> int:
    """The fewest rows by brute force over every partition of the segments (small inputs only)."""
    best = len(lengths)

    def go(k: int, loads: list[int]) -> None:
        nonlocal best
        if len(loads) >= best:
            return
        if k == len(lengths):
            best = len(loads)
            return
        for r in range(len(loads)):
            if loads[r] + lengths[k] <= cap:
                loads[r] += lengths[k]
                go(k + 1, loads)
                loads[r] -= lengths[k]
        go(k + 1, [*loads, lengths[k]])

    go(0, [])
    return best


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(1, 600), min_size=1, max_size=9), st.integers(16, 1024))
def test_packed_rows_are_the_fewest_possible(lengths: list[int], row_tokens: int) -> None:
    cap = max(row_tokens, max(lengths))
    assert len(pack_rows(lengths, row_tokens)) == fewest_rows(lengths, cap)


def test_packed_rows_find_two_rows_where_longest_first_balancing_needs_three() -> None:
    rows = pack_rows([300, 300, 200, 200, 200], 600)
    assert sorted(sorted(r) for r in rows) == [[0, 1], [2, 3, 4]]


def test_packed_rows_are_balanced_not_filled_one_by_one() -> None:
    rows = pack_rows([170] * 8, 1024)  # filling the first row would give 1020 + 340 tokens, padded to 2 × 1020
    assert sorted(len(row) for row in rows) == [4, 4]


def test_a_batch_moves_every_tensor_but_its_indices_and_pair_length_is_the_longer_row() -> None:
    from preftune.data.tokenize import TokenizedPair

    pairs = [TokenizedPair([1, 2], [3, 4, 5], [6]), TokenizedPair([7], [8], [9, 10])]
    assert [pair_length(p) for p in pairs] == [5, 3]
    for layout in ("padded", "packed"):
        batch = collate(layout, pairs, [4, 9], pad_id=0)
        batch.extras["label"] = torch.tensor([True, False])
        moved = batch.to("meta")
        tensors = {k: getattr(moved, k) for k in ("input_ids", "attention_mask", "position_ids", "rows", "cols", "labels", "seq", "weights")}
        assert all(t.device.type == "meta" for t in [*tensors.values(), *moved.extras.values()]), layout
        assert moved.indices.device.type == "cpu" and moved.indices.tolist() == [4, 9] and moved.num_pairs == 2 and moved.layout == batch.layout
        assert set(moved.extras) == set(batch.extras) and all(tuple(t.shape) == tuple(getattr(batch, k).shape) for k, t in tensors.items())
        assert int(batch.token_count()) == (5 + 2 + 3 + 3 if layout == "padded" else 6 + 4)  # non-padding positions


def test_the_exhaustive_search_packs_where_both_heuristics_need_a_row_more() -> None:
    from preftune.data.batch import _balanced, _first_fit

    lengths, cap = [28, 16, 3, 41, 18, 17, 25, 8, 23], 60  # 179 tokens: 3 rows of 60 at the least
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    assert max(sum(lengths[i] for i in row) for row in _balanced(order, lengths, 3)) > cap and _first_fit(order, lengths, 3, cap) is None
    rows = pack_rows(lengths, cap)
    assert len(rows) == 3 and sorted(i for row in rows for i in row) == list(range(9))
    assert all(sum(lengths[i] for i in row) <= cap for row in rows)


def test_collated_batches_name_their_layout_and_hold_exact_positions_segments_and_indexes() -> None:
    from preftune.data.tokenize import TokenizedPair

    pairs = [TokenizedPair([1, 2], [3, 4, 5], [6]), TokenizedPair([7], [8], [9, 10], weight=0.5)]
    padded = collate("padded", pairs, [4, 9], pad_id=0)
    assert padded.layout == "padded" and padded.position_ids[0].tolist() == [0, 1, 2, 3, 4] and padded.position_ids[3].tolist()[:3] == [0, 1, 2]
    assert padded.weights.tolist() == [1.0, 0.5] and padded.weights.dtype == torch.float32
    assert [collate(n, pairs, [4, 9], pad_id=0).layout for n in ("prefix_shared", "packed")] == ["prefix_shared", "packed"]
    assert collate("packed", pairs, [4, 9], pad_id=0, row_tokens=16).input_ids.shape == (1, 10)  # rows as long as their segments
    assert collate("prefix_shared", pairs, [4, 9], pad_id=0).input_ids.shape == (2, 6)  # by default (and always without row_tokens)
    from preftune.data.batch import collate_shared

    assert collate_shared(pairs, [4, 9], 0, None, static=True).input_ids.shape == (2, 6)
    packed = collate("packed", pairs, [4, 9], pad_id=0, row_tokens=16, static=True)
    assert packed.input_ids.shape == (1, 16) and packed.extras["segment"][0].tolist() == [0] * 6 + [1] * 4 + [-1] * 6  # -1: padding
    assert packed.position_ids[0, :10].tolist() == [0, 1, 2, 3, 4, 2, 0, 1, 1, 2]  # rejected restarts after the prompt
    assert packed.extras["part"][0, :10].tolist() == [0, 0, 1, 1, 1, 2, 0, 1, 2, 2]
    assert packed.input_ids.dtype == torch.long and packed.position_ids.dtype == torch.long and packed.extras["valid"].dtype == torch.bool
    with pytest.raises(ValueError, match=r"^a pair has an empty prompt: every sequence needs at least one prompt token \(BOS or text\) before its response$"):
        collate("packed", [TokenizedPair([], [3], [4])], [0], pad_id=0)
    with pytest.raises(ValueError, match=r"^a response starts at position 0: every sequence needs at least one prompt token \(BOS or text\) before its response$"):
        collate("padded", [TokenizedPair([], [3], [4])], [0], pad_id=0)


def test_a_pair_without_a_rejected_response_indexes_only_its_chosen_tokens() -> None:
    from preftune.data.tokenize import TokenizedPair

    for layout in ("prefix_shared", "packed"):
        batch = collate(layout, [TokenizedPair([1, 2], [3, 4], []), TokenizedPair([5], [6], [7])], [0, 1], pad_id=0)
        assert len(batch.rows) == len(batch.cols) == len(batch.labels) == len(batch.seq) == 2 + 1 + 1
        assert batch.lengths.tolist() == [2, 1, 0, 1]


def test_drop_last_keeps_a_full_last_batch_and_first_fit_fills_a_row_exactly() -> None:
    from preftune.data.batch import _first_fit

    for shuffle in (False, True):
        grouped = LengthGroupedBatches([5, 9, 2, 7, 3, 8, 1, 6], 4, seed=1, shuffle=shuffle, drop_last=True)
        consecutive = ConsecutiveBatches(8, 4, seed=1, shuffle=shuffle, drop_last=True)
        for batches in (grouped.batches(0), consecutive.batches(0)):
            assert len(batches) == 2 and sorted(i for b in batches for i in b) == list(range(8))
        assert len(LengthGroupedBatches([5, 9, 2, 7, 3, 8, 1], 4, seed=1, shuffle=shuffle, drop_last=True).batches(0)) == 1
    assert _first_fit([0, 1], [5, 5], 1, 10) == [[0, 1]]  # a row filled to exactly its size
    assert _first_fit([0, 1], [5, 6], 1, 10) is None


def test_a_packing_search_that_runs_out_of_budget_loses_no_segment() -> None:
    """[50, 40, 30, 30, 25, 25] in rows of 100 fit in 2 rows only as {50, 25, 25} + {40, 30, 30}, which neither heuristic
    finds: the search finds it with its budget, and with a budget of one step gives up (3 rows), never returning a
    partial assignment that drops segments."""
    lengths = [50, 40, 30, 30, 25, 25]
    found = pack_rows(lengths, 100)
    assert len(found) == 2 and sorted(i for row in found for i in row) == list(range(6))
    starved = pack_rows(lengths, 100, search_nodes=1)
    assert sorted(i for row in starved for i in row) == list(range(6))
    assert len(starved) == 3 and all(sum(lengths[i] for i in row) <= 100 for row in starved)


def test_the_packing_search_budget_counts_each_placement_once_and_skips_rows_of_equal_load() -> None:
    """[9, 4, 4, 6, 6, 3, 6, 5, 5] in rows of 16 fit in 3 rows only by search: 60 placements find it when rows of equal
    load are tried once (109 without that pruning), so a budget of exactly 60 gives 3 rows and 59 gives 4."""
    lengths = [9, 4, 4, 6, 6, 3, 6, 5, 5]
    for budget, rows in ((60, 3), (59, 4)):
        found = pack_rows(lengths, 16, search_nodes=budget)
        assert len(found) == rows, budget
        assert sorted(i for row in found for i in row) == list(range(9)) and all(sum(lengths[i] for i in row) <= 16 for row in found)


def test_a_batch_bound_for_cuda_goes_through_pinned_memory_without_blocking(monkeypatch: pytest.MonkeyPatch, smol_tokenizer) -> None:
    """The copy path of `PreferenceBatch.to`, recorded without a GPU: for a CUDA device every host tensor but the
    data-set indices is pinned and copied with non_blocking=True; for the CPU nothing is pinned."""
    from preftune.data.batch import collate

    from ..models.test_layouts import hh_pairs

    batch = collate("packed", hh_pairs(smol_tokenizer, 3), [0, 1, 2], smol_tokenizer.pad_token_id, row_tokens=600)
    batch.derived["layout_mask"] = object()
    pinned: list[int] = []
    moved: list[tuple[str, bool]] = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda t: pinned.append(id(t)) or t)
    monkeypatch.setattr(torch.Tensor, "to", lambda t, device, non_blocking=False: moved.append((torch.device(device).type, non_blocking)) or t)
    out = batch.to("cuda")
    tensors = [batch.input_ids, batch.attention_mask, batch.position_ids, batch.rows, batch.cols, batch.labels, batch.seq, batch.weights,
               *batch.extras.values()]
    assert sorted(pinned) == sorted(id(t) for t in tensors)
    assert moved == [("cuda", True)] * len(tensors)
    assert out.indices is batch.indices and out.derived == {}  # forms of the mask belong to the tensors they were made from
    pinned.clear(), moved.clear()
    batch.to(torch.device("cpu"))
    assert pinned == [] and moved == [("cpu", True)] * len(tensors)


def test_the_shuffled_orders_are_pinned_so_a_checkpoint_resumes_with_the_same_data_after_an_upgrade() -> None:
    """The batches of seed 3, epoch 2, as this version makes them: a change to the shuffle (its seed mixing, the
    length groups of 50) would make a checkpoint from an earlier version resume on other pairs."""
    from preftune.data.batch import ConsecutiveBatches, LengthGroupedBatches

    lengths = [(i * 37) % 101 + 1 for i in range(120)]
    assert LengthGroupedBatches(lengths, 2, seed=3).batches(2) == [[61, 91], [28, 58], [30, 60], [22, 52], [29, 59], [100, 18], [44, 74], [13, 2], [78, 97], [89, 119], [65, 95], [41, 0], [73, 103], [115, 14], [107, 6], [27, 57], [88, 118], [5, 35], [117, 46], [92, 21], [26, 75], [36, 66], [111, 40], [47, 77], [113, 17], [53, 83], [32, 62], [64, 23], [68, 98], [72, 1], [11, 112], [3, 82], [34, 94], [67, 56], [102, 31], [96, 25], [76, 106], [86, 116], [55, 85], [71, 101], [84, 114], [104, 33], [69, 99], [63, 93], [48, 7], [81, 10], [90, 19], [9, 39], [109, 38], [8, 43], [108, 37], [4, 105], [80, 110], [15, 45], [87, 16], [24, 54], [51, 70], [12, 42], [20, 50], [49, 79]]  # 60 batches: two groups of up to 50
    assert ConsecutiveBatches(40, 4, seed=3).batches(2) == [[4, 5, 6, 7], [8, 9, 10, 11], [24, 25, 26, 27], [28, 29, 30, 31], [20, 21, 22, 23], [36, 37, 38, 39], [16, 17, 18, 19], [12, 13, 14, 15], [0, 1, 2, 3], [32, 33, 34, 35]]
    assert LengthGroupedBatches(lengths, 8, seed=3).batches(1) != LengthGroupedBatches(lengths, 8, seed=3).batches(2)


def test_each_layouts_tensors_have_the_dtypes_the_model_and_memory_budget_expect(smol_tokenizer) -> None:
    """Token ids and indices int64 (embedding lookups), weights float32, the padded mask int64, layout masks bool, the
    segment ids int32 and the part codes int8 (one byte a token); packed rows are not padded to a multiple of
    row_tokens unless asked."""
    from preftune.config import TrainConfig
    from preftune.data.batch import collate

    from ..models.test_layouts import hh_pairs

    pairs = hh_pairs(smol_tokenizer, 4)
    pad = smol_tokenizer.pad_token_id
    padded = collate("padded", pairs, range(4), pad)
    assert (padded.input_ids.dtype, padded.attention_mask.dtype, padded.weights.dtype, padded.indices.dtype) == (torch.long, torch.long, torch.float32, torch.long)
    for layout in ("prefix_shared", "packed"):
        b = collate(layout, pairs, range(4), pad, row_tokens=1000)
        assert (b.input_ids.dtype, b.attention_mask.dtype, b.weights.dtype, b.indices.dtype) == (torch.long, torch.bool, torch.float32, torch.long)
        assert (b.extras["segment"].dtype, b.extras["part"].dtype) == (torch.int32, torch.int8)
        assert b.rows.dtype == b.cols.dtype == b.labels.dtype == b.seq.dtype == torch.long
    packed = collate("packed", pairs, range(4), pad, row_tokens=1000)
    longest = max(int(v.sum()) for v in packed.extras["valid"])
    assert packed.input_ids.shape[1] == longest and collate("packed", pairs, range(4), pad, row_tokens=1000, static=True).input_ids.shape[1] % 1000 == 0
    import inspect

    assert inspect.signature(collate).parameters["row_tokens"].default == TrainConfig().pack_tokens  # one default for the row size


def test_two_halves_of_a_row_share_it_and_the_exact_search_covers_up_to_twelve_segments() -> None:
    assert pack_rows([50, 50], 100) == [[0, 1]]  # a segment of exactly half a row may share it
    twelve = [19, 12, 10, 18, 9, 18, 6, 14, 12, 2, 13, 14]  # fits 4 rows of 37 only by search (neither heuristic finds it)
    assert len(pack_rows(twelve, 37)) == 4
    thirteen = [4, 17, 12, 12, 15, 10, 9, 4, 11, 19, 18, 17, 4]  # over EXACT_SEGMENTS: the heuristics' 6 rows, no search
    assert len(pack_rows(thirteen, 31)) == 6


def test_an_unknown_layout_is_refused_naming_the_valid_ones(smol_tokenizer) -> None:
    from preftune.data.batch import collate

    with pytest.raises(ValueError, match=r"^unknown layout 'rows'; valid: \('padded', 'prefix_shared', 'packed'\)$"):
        collate("rows", [], [], 0)
