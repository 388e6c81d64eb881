"""`words_to_rows`: words and phrases as rows of the frozen input-embedding table."""

import pytest
import torch

from lego_inversion.backbones.tokens import words_to_rows


class _Tok:
    unk_token_id = 0
    vocab = {"frozen": [3], "in": [1], "ice": [2], "zzz": [0]}

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [i for w in text.split() for i in self.vocab[w]]}


def test_words_to_rows_averages_tokens_and_rejects_unknown():
    table = torch.arange(12, dtype=torch.float32).view(4, 3)
    rows = words_to_rows(["frozen in ice", "ice"], _Tok(), table)
    torch.testing.assert_close(rows[0], table[[3, 1, 2]].mean(0))
    torch.testing.assert_close(rows[1], table[2])
    with pytest.raises(ValueError, match="zzz"):
        words_to_rows(["zzz"], _Tok(), table)
