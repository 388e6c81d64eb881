"""New token rows on a frozen text encoder: the only parameters Lego ever trains.

    ext = TokenExtension.install(text_encoder)      # replaces the input embedding, original table untouched
    ids = ext.add(torch.stack([init_vec_subj, init_vec_cpt]))   # rows for token ids V, V+1 (one block)
    optimizer = AdamW([ext.block(ids)])              # the optimizer holds only these new rows
    with ext.frozen([V]):                            # <subj> gets no gradient inside this block
        hidden = text_encoder(ids)[0]

Compared with the usual Textual Inversion recipe (resize the whole table, train it, copy the original rows back
after every step), nothing of size |vocab|×d is touched per step: the frozen table is only indexed, and the
original rows are bit-identical by construction, not by restoration.

Words as rows (`words_to_rows`): a word or phrase is tokenized without special tokens, each of its tokens is
looked up in the frozen input-embedding table, and the rows are averaged, so "frozen in ice" or a word the
tokenizer splits into sub-words ("dripping" -> "drip", "##ping") gives one row in the same space as a learned
token. Initial values of new tokens and the Context Loss's P_i / N_i (Eq. 2) are made this way, once per run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
from torch import nn


class _NewRows(nn.Module):
    """Holds the fp32 rows, one parameter block per `add` call (one inversion run's tokens = one block, so each
    run's optimizer owns exactly its rows when several runs share the model). A child module registered after
    `base`, so that the encoder's first floating parameter stays the frozen table: transformers' `model.dtype` is
    that parameter's dtype, and diffusers casts prompt embeddings to it (an fp32 parameter first breaks fp16/bf16
    generation)."""

    def __init__(self, dim: int):
        super().__init__()
        self.blocks = nn.ParameterList()
        self.dim = dim


class TokenExtension(nn.Module):
    """An input-embedding module = frozen `base` table (V rows) + trainable `extra` rows (ids V, V+1, ...)."""

    def __init__(self, base: nn.Embedding):
        super().__init__()
        self.base = base
        self.base.weight.requires_grad_(False)
        self.new = _NewRows(base.weight.shape[1])
        self._frozen: torch.Tensor | None = None
        self._masks: dict[tuple, torch.Tensor] = {}

    @classmethod
    def install(cls, encoder: nn.Module) -> TokenExtension:
        """Wrap `encoder`'s input embedding once; later calls return the installed extension."""
        current = encoder.get_input_embeddings()
        if isinstance(current, cls):
            return current
        ext = cls(current)
        encoder.set_input_embeddings(ext)
        return ext

    @property
    def num_base(self) -> int:
        return self.base.weight.shape[0]

    @property
    def num_embeddings(self) -> int:
        return self.num_base + self.extra.shape[0]

    @property
    def embedding_dim(self) -> int:
        return self.base.weight.shape[1]

    @property
    def extra(self) -> torch.Tensor:
        """The trainable rows (fp32), one per new token id, in id order (the blocks concatenated)."""
        blocks = list(self.new.blocks)
        if not blocks:
            return self.base.weight.new_zeros((0, self.embedding_dim), dtype=torch.float32)
        return blocks[0] if len(blocks) == 1 else torch.cat(blocks)

    @property
    def weight(self) -> torch.Tensor:
        """The full table (read-only view for code that expects `nn.Embedding.weight`)."""
        return torch.cat([self.base.weight, self.extra.detach().to(self.base.weight.dtype)])

    def add(self, vectors: torch.Tensor) -> list[int]:
        """Append rows as one new block (kept in fp32 whatever the model dtype); returns their token ids."""
        start = self.num_embeddings
        vectors = vectors.detach().to(device=self.base.weight.device, dtype=torch.float32).reshape(-1,
                                                                                                   self.embedding_dim)
        self.new.blocks.append(nn.Parameter(vectors.clone()))
        return list(range(start, start + vectors.shape[0]))

    def block(self, ids: Iterable[int]) -> nn.Parameter:
        """The parameter block that holds exactly the rows of `ids` (as added together by one `add` call)."""
        ids = list(ids)
        start = self.num_base
        for block in self.new.blocks:
            if ids == list(range(start, start + block.shape[0])):
                return block
            start += block.shape[0]
        raise ValueError(f"ids {ids} are not one block of added rows")

    def rows(self, ids: Iterable[int]) -> torch.Tensor:
        """Current vectors of new token ids, with gradient (for the Context Loss, Eq. 2)."""
        idx = torch.tensor([i - self.num_base for i in ids], device=self.extra.device)
        return self.extra[idx]

    @contextlib.contextmanager
    def frozen(self, ids: Iterable[int]) -> Iterator[None]:
        """Inside this block the given new ids act as constants (no gradient flows into them)."""
        previous, self._frozen = self._frozen, self._mask(tuple(i - self.num_base for i in ids))
        try:
            yield
        finally:
            self._frozen = previous

    def _mask(self, rows: tuple[int, ...]) -> torch.Tensor | None:
        """The device mask of `rows`, made once per set of rows and row count (the training step asks every step)."""
        if not rows:
            return None
        key = (rows, self.extra.shape[0], self.extra.device)
        if key not in self._masks:
            mask = torch.zeros(self.extra.shape[0], dtype=torch.bool)
            mask[list(rows)] = True
            self._masks[key] = mask.to(self.extra.device)
        return self._masks[key]

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        out = self.base(input_ids.clamp(max=self.num_base - 1))
        if self.extra.shape[0] == 0:
            return out
        is_new = input_ids >= self.num_base  # no `.any()` check: it would sync the host with the GPU every call
        extra = self.extra
        if self._frozen is not None:
            extra = torch.where(self._frozen[:, None], extra.detach(), extra)
        new_rows = extra[(input_ids - self.num_base).clamp(min=0)].to(out.dtype)
        return torch.where(is_new[..., None], new_rows, out)


def words_to_rows(words: list[str], tokenizer, embedding: torch.Tensor) -> torch.Tensor:
    """Embed words/phrases as rows of the frozen input-embedding matrix (mean over their tokens) -> [len, d].

    Raises ValueError naming the word if the tokenizer produces no token, or only the unknown token, for it.
    """
    rows = []
    unk = getattr(tokenizer, "unk_token_id", None)
    for word in words:
        ids = tokenizer(word, add_special_tokens=False)["input_ids"]
        if not ids or (unk is not None and all(i == unk for i in ids)):
            raise ValueError(f"the tokenizer cannot embed {word!r} (it maps to no known token)")
        rows.append(embedding[torch.tensor(ids, device=embedding.device)].float().mean(dim=0))
    return torch.stack(rows)
