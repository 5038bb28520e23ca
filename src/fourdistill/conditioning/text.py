"""Per-(t, l) text conditions with placeholder tokens and NeTI's textual bypass.

The prompt is a full tokenised prompt with placeholder tokens, e.g.
`"<time> <view> a red cube spinning"`. For every (diffusion timestep, cross-attention layer)
the placeholder's input embedding is the mapper's v_base, the frozen text encoder runs over the
whole prompt (BOS, position embeddings, EOS, padding: the model sees an ordinary prompt), and at
the placeholder's output position the bypass is added (NeTI's textual bypass, Alaluf et al. 2023):

    v* = E(v_base) + alpha * ||E(v_base)|| * v_bypass / ||v_bypass||

All L layers (and both placeholders) are served by ONE text-encoder pass over a batch of L * B
prompts, instead of a pass per layer.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

TIME_TOKEN = "<time>"
VIEW_TOKEN = "<view>"
# Super-category words whose embedding norm NeTI uses for v_base (Alaluf et al. 2023).
SUPER_CATEGORY = {"time": "time", "view": "view"}


@dataclass
class BypassConfig:
    """alpha per token. Time: 0.2 (NeTI and the 4Distillation reference).

    View: 0.2 too. A camera change is geometric and must be reproduced precisely, which argued
    for a larger bypass (ViewNeTI used 5, and this project 1.0 until measured); on the shipped
    v-prediction stack a view bypass of 1.0 tears the view token's images into fragments while
    0.2 and none score alike (docs/results/2026-12-stack-experiments.md). Ablate with `fourdistill evaluate` before
    changing it for another stack.
    """

    time_alpha: float = 0.2  # NeTI
    view_alpha: float = 0.2


def add_placeholder_tokens(tokenizer, text_encoder, tokens=(TIME_TOKEN, VIEW_TOKEN)) -> dict[str, int]:
    """Add placeholder tokens (once) and grow the embedding table; returns token -> id.

    The new rows are never read: the placeholders' input embeddings come from the mappers.
    """
    tokenizer.add_tokens([t for t in tokens if t not in tokenizer.get_vocab()])
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in tokens}
    if text_encoder.get_input_embeddings().num_embeddings < len(tokenizer):
        text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)  # the rows are never read
    return ids


@contextlib.contextmanager
def substituted_embeddings(text_encoder, substitutions: dict[int, torch.Tensor]):
    """Within the block, the input embedding of token id k in row n is `substitutions[k][n]`.

    Implemented as a forward hook on the token-embedding table: the rest of the text encoder
    (positions, causal attention, final norm) runs unchanged. Each row must contain each
    substituted token exactly once.
    """
    table = text_encoder.get_input_embeddings()

    def hook(module, inputs, output):
        ids = inputs[0]
        out = output
        for token_id, vectors in substitutions.items():
            hit = ids == token_id
            counts = hit.sum(dim=1)
            if not torch.all(counts == 1):
                raise ValueError(f"every prompt must contain placeholder token id {token_id} exactly once, found counts {counts.tolist()}")
            out = torch.where(hit[..., None], vectors.to(out.dtype)[:, None, :], out)
        return out

    handle = table.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def bypass(encoded: torch.Tensor, v_bypass: torch.Tensor, alpha: float) -> torch.Tensor:
    """NeTI textual bypass: e + alpha * ||e|| * v / ||v||. encoded, v_bypass: (N, C)."""
    v_dir = v_bypass / v_bypass.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    return encoded + alpha * encoded.norm(dim=-1, keepdim=True) * v_dir


class MappedTextConditioner(nn.Module):
    """Text conditions for every cross-attention layer from a prompt and the mappers.

    Holds references to the frozen text encoder and tokenizer; only the mappers are modules
    of its own (so `state_dict()` is the mappers' weights).

    A mapper is any module called as `mapper(timesteps (N,), layers (N,), condition (N, k),
    truncation=None) -> (v_base (N, C), v_bypass (N, C))` with a `config` carrying `kind` and
    `n_layers`: NeTI's mapper (Alaluf et al. 2023), as `fourdistill.mappers` builds it. This
    module needs nothing else of them, so the mappers and their checkpoints build on it.
    """

    def __init__(
        self,
        text_encoder,
        tokenizer,
        n_layers: int,
        time_mapper: nn.Module | None = None,
        view_mapper: nn.Module | None = None,
        bypass_config: BypassConfig | None = None,
    ):
        super().__init__()
        if time_mapper is None and view_mapper is None:
            raise ValueError("give at least one of time_mapper, view_mapper")
        self.text_encoder = [text_encoder]  # a list: not registered as a submodule, not saved
        self.tokenizer = tokenizer
        self.n_layers = int(n_layers)
        self.time_mapper = time_mapper
        self.view_mapper = view_mapper
        self.bypass_config = bypass_config or BypassConfig()
        for m in (time_mapper, view_mapper):
            if m is not None and m.config.n_layers != self.n_layers:
                raise ValueError(f"{m.config.kind} mapper was built for {m.config.n_layers} layers, the U-Net has {self.n_layers}")
        self.token_ids = add_placeholder_tokens(tokenizer, text_encoder)

    @property
    def encoder(self):
        return self.text_encoder[0]

    def prompt(self, caption: str, time: bool | None = None, view: bool | None = None) -> str:
        """Placeholders first, then the caption: "<time> <view> a red cube"."""
        time = self.time_mapper is not None if time is None else time
        view = self.view_mapper is not None if view is None else view
        parts = ([TIME_TOKEN] if time else []) + ([VIEW_TOKEN] if view else []) + ([caption] if caption else [])
        return " ".join(parts)

    def tokenize(self, prompts: list[str], device=None) -> torch.Tensor:
        """(B,) prompts -> (B, max_length) ids, padded like the diffusion pipeline pads."""
        ids = self.tokenizer(
            prompts, padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids
        return ids.to(device) if device is not None else ids

    def forward(
        self,
        input_ids: torch.Tensor,
        timesteps: torch.Tensor,
        time_condition: torch.Tensor | None = None,
        view_condition: torch.Tensor | None = None,
        truncation: int | None = None,
        textual_bypass: bool = True,
    ) -> torch.Tensor:
        """Conditions for every layer in one text-encoder pass.

        input_ids (B, S) containing the placeholders of the mappers in use; timesteps (B,);
        time_condition (B, 1); view_condition (B, k). textual_bypass: False sets both bypass alphas to 0
        for this call (the encoded v_base alone: the `no_bypass` ablation). Returns (L, B, S, C).
        """
        b, s = input_ids.shape
        n_l = self.n_layers
        device = input_ids.device
        layers = torch.arange(n_l, device=device).repeat_interleave(b)  # (L*B,) layer-major
        ids = input_ids.repeat(n_l, 1)  # (L*B, S)
        t = timesteps.reshape(b).to(device).repeat(n_l)
        substitutions, bypasses = {}, []
        for kind, mapper, cond, alpha in (
            ("time", self.time_mapper, time_condition, self.bypass_config.time_alpha if textual_bypass else 0.0),
            ("view", self.view_mapper, view_condition, self.bypass_config.view_alpha if textual_bypass else 0.0),
        ):
            token_id = self.token_ids[TIME_TOKEN if kind == "time" else VIEW_TOKEN]
            present = bool((input_ids == token_id).any())
            if mapper is None or cond is None:
                if present:
                    raise ValueError(f"the prompt has the {kind} placeholder but no {kind} mapper/condition was given")
                continue
            if not present:
                raise ValueError(f"a {kind} condition was given but the prompt has no {TIME_TOKEN if kind == 'time' else VIEW_TOKEN} placeholder")
            v_base, v_bypass = mapper(t, layers, cond.reshape(b, -1).repeat(n_l, 1), truncation=truncation)
            substitutions[token_id] = v_base
            bypasses.append((token_id, v_bypass, alpha))
        if not substitutions:
            raise ValueError("no time or view condition to apply")
        with substituted_embeddings(self.encoder, substitutions):
            encoded = self.encoder(ids).last_hidden_state  # (L*B, S, C)
        for token_id, v_bypass, alpha in bypasses:
            pos = (ids == token_id).float().argmax(dim=1)  # one per row (checked in the hook)
            rows = torch.arange(len(ids), device=device)
            at = encoded[rows, pos]
            encoded = encoded.index_put((rows, pos), bypass(at, v_bypass.to(at.dtype), alpha))
        return encoded.reshape(n_l, b, s, -1)


def super_category_norm(text_encoder, tokenizer, word: str) -> float:
    """Norm of a word's input embedding (NeTI normalises v_base to it)."""
    ids = tokenizer(word, add_special_tokens=False).input_ids
    if not ids:
        raise ValueError(f"the tokenizer cannot encode {word!r}")
    emb = text_encoder.get_input_embeddings().weight[ids].detach()
    return float(emb.norm(dim=-1).mean())
