"""The learnable prompt pair and the text encoder that runs CLIP's text transformer on token embeddings.

CLIP-LIT learns prompts in embedding space: each prompt is the whole (context_length x width) embedding sequence of
a placeholder text "X X ... X", initialised from CLIP's token embeddings of that text. Index 0 is the negative
(backlit) prompt, index 1 the positive (well-lit) one. Text features are read at the end-of-text position, as CLIP does
for real text.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from cliplit.core.atomic import atomic_output
from cliplit.core.errors import CliplitError

NEGATIVE = 0  # index of the backlit prompt; the well-lit one is 1
PROMPTS_FORMAT = "cliplit-prompts"


def placeholder_tokens(length: int, context_length: int, vocab_size: int) -> torch.Tensor:
    """Token ids (1 x context_length) of "X X ... X" with ``length`` placeholders, from CLIP's BPE tokenizer."""
    if length + 2 > context_length:
        raise CliplitError(f"prompt length {length} does not fit the text context of {context_length} tokens")
    tokens = open_clip.tokenize([" ".join(["X"] * length)], context_length=context_length)
    if int(tokens.max()) >= vocab_size:
        raise CliplitError(f"the text tower's vocabulary ({vocab_size}) is smaller than CLIP's tokenizer needs")
    return tokens


class TextEncoder(nn.Module):
    """CLIP's frozen text tower from the embedding layer on: positional embedding, transformer, final norm, projection.

    It shares (does not copy) the CLIP modules, so it costs no memory and stays frozen with them.
    """

    def __init__(self, clip: open_clip.CLIP) -> None:
        super().__init__()
        self.transformer = clip.transformer
        self.ln_final = clip.ln_final
        self.text_projection = clip.text_projection
        self.positional_embedding = clip.positional_embedding
        self.register_buffer("attn_mask", clip.attn_mask, persistent=False)

    def forward(self, embeddings: torch.Tensor, eot_index: int) -> torch.Tensor:
        """Unit-norm text features (N x embed_dim) of N embedding sequences (N x context_length x width)."""
        x = embeddings + self.positional_embedding.to(embeddings.dtype)
        x = self.transformer(x, attn_mask=self.attn_mask)
        x = self.ln_final(x)[:, eot_index]
        if isinstance(self.text_projection, nn.Linear):
            x = self.text_projection(x)
        elif self.text_projection is not None:
            x = x @ self.text_projection
        return F.normalize(x.float(), dim=-1)


class PromptPair(nn.Module):
    """The negative and positive prompts as one learnable tensor (2 x context_length x width)."""

    def __init__(self, embeddings: torch.Tensor, eot_index: int) -> None:
        super().__init__()
        if embeddings.dim() != 3 or embeddings.shape[0] != 2:
            raise CliplitError(f"a prompt pair is 2 x context x width embeddings, got shape {tuple(embeddings.shape)}")
        self.embeddings = nn.Parameter(embeddings.detach().clone().float())
        self.eot_index = int(eot_index)

    @classmethod
    def from_clip(cls, clip: open_clip.CLIP, length: int) -> PromptPair:
        """Both prompts initialised from the token embeddings of the placeholder text."""
        tokens = placeholder_tokens(length, clip.context_length, clip.vocab_size).to(clip.token_embedding.weight.device)
        with torch.no_grad():
            embedding = clip.token_embedding(tokens).float()
        return cls(embedding.repeat(2, 1, 1), int(tokens.argmax(dim=-1)))

    def forward(self, encoder: TextEncoder) -> torch.Tensor:
        """Unit-norm text features of the two prompts (2 x embed_dim); gradients flow into the embeddings."""
        return encoder(self.embeddings, self.eot_index)


def save_prompts(prompts: PromptPair, path: str | os.PathLike[str], source: dict[str, Any] | None = None) -> Path:
    """Write the prompt pair (embeddings, end-of-text position, provenance) atomically."""
    blob = {
        "format": PROMPTS_FORMAT,
        "embeddings": prompts.embeddings.detach().cpu(),
        "eot_index": prompts.eot_index,
        "source": source or {},
    }
    with atomic_output(path) as tmp:
        torch.save(blob, tmp)
    return Path(path)


def load_prompts(path: str | os.PathLike[str], prompt_length: int) -> PromptPair:
    """Read a prompt pair saved by cliplit or the released ``init_prompt_pair.pth`` (key ``embedding_prompt``).

    The released file stores no end-of-text position; it follows from the placeholder text, hence ``prompt_length``.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CliplitError(f"prompt file {path} not found")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(blob, dict) and blob.get("format") == PROMPTS_FORMAT:
        return PromptPair(blob["embeddings"], blob["eot_index"])
    if isinstance(blob, dict):
        released = {key.removeprefix("module."): value for key, value in blob.items()}
        if "embedding_prompt" in released:
            # SOT, the placeholders, then EOT.
            return PromptPair(released["embedding_prompt"], prompt_length + 1)
    raise CliplitError(f"{path} holds no prompt pair (expected a cliplit prompts file or the released format)")


def check_prompts_fit(prompts: PromptPair, clip: open_clip.CLIP) -> None:
    """Refuse prompts learned for another text tower (wrong context length or width)."""
    expected = (clip.context_length, clip.token_embedding.embedding_dim)
    if tuple(prompts.embeddings.shape[1:]) != expected:
        raise CliplitError(
            f"the prompts have shape {tuple(prompts.embeddings.shape[1:])} per prompt but the CLIP text tower "
            f"needs {expected}: they were learned with another CLIP model"
        )
