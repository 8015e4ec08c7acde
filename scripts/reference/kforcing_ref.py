"""Independent PyTorch reference of K-Forcing, written from /work/shared/KFORCING.md (sections 2-6).

Everything runs on CPU in float32 with dense boolean attention masks, the way the official code builds them, so that
the TypeScript implementation (packed rows, structured masks, KV cache) is checked against a different formulation.
Parameters are a flat dict name -> tensor using the official checkpoint names (without the Lightning `backbone.`
prefix). No caching anywhere: every decode step recomputes the whole sequence.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

MASK_LOGIT = -1000.0


@dataclass
class Config:
    vocab_size: int
    hidden: int
    n_heads: int
    n_blocks: int
    mask_index: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.n_heads


# ---- parameters ------------------------------------------------------------------------------------------------

def inv_freq(head_dim: int) -> torch.Tensor:
    # Same float32 expression as the rotary module of the official code.
    return 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2).float() / head_dim))


def init_params(cfg: Config, pflm: bool, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Random weights scaled so that logits spread over O(1): argmax margins and CDF gaps stay far above float32
    rounding, which keeps token-level fixtures stable across implementations."""
    D, V = cfg.hidden, cfg.vocab_size

    def lin(out_f: int, in_f: int) -> torch.Tensor:
        return torch.randn(out_f, in_f, generator=gen) / math.sqrt(in_f)

    def vec(n: int, scale: float, offset: float = 0.0) -> torch.Tensor:
        return offset + scale * torch.randn(n, generator=gen)

    p: dict[str, torch.Tensor] = {}
    p['vocab_embed.embedding'] = torch.randn(V, D, generator=gen)
    p['rotary_emb.inv_freq'] = inv_freq(cfg.head_dim)
    for i in range(cfg.n_blocks):
        b = f'blocks.{i}.'
        p[b + 'norm1.weight'] = vec(D, 0.1, 1.0)
        p[b + 'attn_qkv.weight'] = lin(3 * D, D)
        p[b + 'attn_out.weight'] = lin(D, D)
        p[b + 'norm2.weight'] = vec(D, 0.1, 1.0)
        p[b + 'mlp.0.weight'] = lin(4 * D, D)
        p[b + 'mlp.0.bias'] = vec(4 * D, 0.1)
        p[b + 'mlp.2.weight'] = lin(D, 4 * D)
        p[b + 'mlp.2.bias'] = vec(D, 0.1)
    p['output_layer.norm_final.weight'] = vec(D, 0.1, 1.0)
    p['output_layer.linear.weight'] = lin(V, D) * 2.0
    p['output_layer.linear.bias'] = vec(V, 0.1)
    if pflm:
        p['noise_encoder.combined_proj.weight'] = lin(D, 2 * D) * 2.0
        p['noise_encoder.combined_proj.bias'] = vec(D, 0.1)
        p['noise_encoder.norm.weight'] = vec(D, 0.1, 1.0)
        p['noise_encoder.norm.bias'] = vec(D, 0.1)
        p['noise_encoder.mlp.0.weight'] = lin(4 * D, D)
        p['noise_encoder.mlp.0.bias'] = vec(4 * D, 0.1)
        p['noise_encoder.mlp.2.weight'] = lin(D, 4 * D)
        p['noise_encoder.mlp.2.bias'] = vec(D, 0.1)
    return {k: v.float().contiguous() for k, v in p.items()}


# ---- backbone (section 2) --------------------------------------------------------------------------------------

def layer_norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    return F.layer_norm(x.float(), (x.shape[-1],), w, b, 1e-5)


def rope(x: torch.Tensor, pos: torch.Tensor, inv: torch.Tensor) -> torch.Tensor:
    """x [L, H, Dh]; non-interleaved halves; angle = position * inv_freq in float32 (as the official rotary)."""
    ang = pos.float()[:, None] * inv[None, :]
    cos, sin = ang.cos()[:, None, :], ang.sin()[:, None, :]
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def backbone(p: dict, cfg: Config, h: torch.Tensor, pos: torch.Tensor, allow: torch.Tensor) -> torch.Tensor:
    """h [L, D] input embeddings, pos [L] RoPE positions, allow [L, L] bool (query row may see key column).
    Returns logits [L, V] with the [MASK] logit replaced by -1000."""
    L, D = h.shape
    H, Dh = cfg.n_heads, cfg.head_dim
    inv = p['rotary_emb.inv_freq']
    for i in range(cfg.n_blocks):
        b = f'blocks.{i}.'
        y = layer_norm(h, p[b + 'norm1.weight'])
        qkv = F.linear(y, p[b + 'attn_qkv.weight']).view(L, 3, H, Dh)
        q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
        q, k = rope(q, pos, inv), rope(k, pos, inv)
        s = torch.einsum('qhd,khd->hqk', q, k) / math.sqrt(Dh)
        s = s.masked_fill(~allow[None], float('-inf'))
        a = torch.einsum('hqk,khd->qhd', s.softmax(dim=-1), v).reshape(L, D)
        h = h + F.linear(a, p[b + 'attn_out.weight'])
        y = layer_norm(h, p[b + 'norm2.weight'])
        y = F.gelu(F.linear(y, p[b + 'mlp.0.weight'], p[b + 'mlp.0.bias']), approximate='tanh')
        h = h + F.linear(y, p[b + 'mlp.2.weight'], p[b + 'mlp.2.bias'])
    y = layer_norm(h, p['output_layer.norm_final.weight'])
    logits = F.linear(y, p['output_layer.linear.weight'], p['output_layer.linear.bias'])
    # Replaced, not offset: the [MASK] column is a constant and receives no gradient.
    is_mask = torch.arange(cfg.vocab_size) == cfg.mask_index
    return torch.where(is_mask[None, :], torch.full_like(logits, MASK_LOGIT), logits)


def causal(L: int) -> torch.Tensor:
    i = torch.arange(L)
    return i[None, :] <= i[:, None]


def ar_logits(p: dict, cfg: Config, tokens: list[int]) -> torch.Tensor:
    """[N, V]: row t predicts token t+1."""
    t = torch.tensor(tokens, dtype=torch.long)
    N = len(tokens)
    return backbone(p, cfg, p['vocab_embed.embedding'][t], torch.arange(N), causal(N))


def log_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return torch.log_softmax(logits / temperature, dim=-1)


# ---- noise encoder (section 3) ---------------------------------------------------------------------------------

def phi(s: torch.Tensor, D: int) -> torch.Tensor:
    """float64 [..., D]: cos half first, w_i = 10000^(-i/(D/2))."""
    half = D // 2
    w = 10000.0 ** (-torch.arange(half, dtype=torch.float64) / half)
    ang = 2.0 * math.pi * s.double()[..., None] * w
    return torch.cat([ang.cos(), ang.sin()], dim=-1)


def noise_embed(p: dict, cfg: Config, u: torch.Tensor, tau) -> torch.Tensor:
    """u [n] (float64 uniforms), tau scalar or [n] -> float32 [n, D]."""
    D = cfg.hidden
    tau_t = torch.as_tensor(tau, dtype=torch.float64).expand(u.shape)
    feats = torch.cat([phi(u, D), phi(tau_t, D)], dim=-1).float()
    h0 = F.linear(feats, p['noise_encoder.combined_proj.weight'], p['noise_encoder.combined_proj.bias'])
    y = F.layer_norm(h0, (D,), p['noise_encoder.norm.weight'], p['noise_encoder.norm.bias'], 1e-5)
    y = F.gelu(F.linear(y, p['noise_encoder.mlp.0.weight'], p['noise_encoder.mlp.0.bias']))  # exact GELU
    return h0 + F.linear(y, p['noise_encoder.mlp.2.weight'], p['noise_encoder.mlp.2.bias'])


# ---- staircase pass (section 4) --------------------------------------------------------------------------------

def stair_logits(p: dict, cfg: Config, ctx: list[int], u: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """ctx: the N' context tokens (one window per position); u [N', k] float64. Returns [N', k, V];
    [t, a-1] predicts token t + a."""
    Np, k = u.shape
    assert Np == len(ctx)
    E = p['vocab_embed.embedding']
    h = torch.cat([E[torch.tensor(ctx, dtype=torch.long)], noise_embed(p, cfg, u.reshape(-1), tau)])
    L = Np + Np * k
    pos = torch.empty(L, dtype=torch.long)
    pos[:Np] = torch.arange(Np)
    allow = torch.zeros(L, L, dtype=torch.bool)
    allow[:Np, :Np] = causal(Np)
    for t in range(Np):
        for a in range(1, k + 1):
            r = Np + t * k + (a - 1)
            pos[r] = t + a
            allow[r, : t + 1] = True
            allow[r, Np + t * k: Np + t * k + a] = True
    return backbone(p, cfg, h, pos, allow)[Np:].view(Np, k, cfg.vocab_size)


def double_forward_logits(p: dict, cfg: Config, ctx: list[int], y1: torch.Tensor, u2: torch.Tensor,
                          tau: float = 1.0) -> torch.Tensor:
    """Teacher pass 2 of self-forcing. y1 [N', k] tokens from pass 1, u2 [N', k] second-half noise.
    Returns logits of the F2 stream [N', k, V]."""
    Np, k = u2.shape
    E = p['vocab_embed.embedding']
    h = torch.cat([E[torch.tensor(ctx, dtype=torch.long)], E[y1.reshape(-1)],
                   noise_embed(p, cfg, u2.reshape(-1), tau)])
    f1, f2 = Np, Np + Np * k
    L = Np + 2 * Np * k
    pos = torch.empty(L, dtype=torch.long)
    pos[:Np] = torch.arange(Np)
    allow = torch.zeros(L, L, dtype=torch.bool)
    allow[:Np, :Np] = causal(Np)
    for t in range(Np):
        for a in range(1, k + 1):
            r1 = f1 + t * k + (a - 1)
            pos[r1] = t + a
            allow[r1, : t + 1] = True
            allow[r1, f1 + t * k: f1 + t * k + a] = True
            r2 = f2 + t * k + (a - 1)
            pos[r2] = t + k + a
            allow[r2, : t + 1] = True
            allow[r2, f1 + t * k: f1 + t * k + k] = True
            allow[r2, f2 + t * k: f2 + t * k + a] = True
    return backbone(p, cfg, h, pos, allow)[f2:].view(Np, k, cfg.vocab_size)


# ---- inference step (section 4, no cache: full recompute) -------------------------------------------------------

def pflm_step_logits(p: dict, cfg: Config, ctx: list[int], u: list[float], tau: float = 1.0) -> torch.Tensor:
    """Logits [k, V] of the k noise slots after the whole context, with plain causal attention."""
    E = p['vocab_embed.embedding']
    k = len(u)
    h = torch.cat([E[torch.tensor(ctx, dtype=torch.long)],
                   noise_embed(p, cfg, torch.tensor(u, dtype=torch.float64), tau)])
    L = len(ctx) + k
    return backbone(p, cfg, h, torch.arange(L), causal(L))[len(ctx):]


def ar_step_logits(p: dict, cfg: Config, ctx: list[int]) -> torch.Tensor:
    return ar_logits(p, cfg, ctx)[-1]


# ---- targets (section 5) ---------------------------------------------------------------------------------------

def inverse_cdf(logits: torch.Tensor, u: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """logits [R, V] float32, u [R] float64 -> [R] smallest v with cdf[v] >= u, CDF in vocabulary order."""
    probs = torch.softmax(logits.double() / tau, dim=-1)
    cdf = probs.cumsum(dim=-1)
    idx = (cdf < u[:, None]).sum(dim=-1)
    return idx.clamp(max=logits.shape[-1] - 1)


def cdf_gap(logits: torch.Tensor, u: torch.Tensor, tau: float = 1.0) -> float:
    """Smallest distance between a uniform and any CDF value: how far each draw is from flipping its token."""
    cdf = torch.softmax(logits.double() / tau, dim=-1).cumsum(dim=-1)
    return float((cdf - u[:, None]).abs().min())


def stage1_targets(p: dict, cfg: Config, data: list[int], u: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """AR teacher -> PFLM k=1: window t (context x_0..x_t) gets inverse-CDF target at u[t]; N' = N - 1."""
    logits = ar_logits(p, cfg, data[:-1])
    return inverse_cdf(logits, u, tau)


def self_forcing_targets(p: dict, cfg: Config, ctx: list[int], u: torch.Tensor, tau: float = 1.0):
    """Teacher PFLM(k) -> targets [N', 2k] for student PFLM(2k). u [N', 2k]. Returns (targets, pass1 logits,
    pass2 logits)."""
    k = u.shape[1] // 2
    l1 = stair_logits(p, cfg, ctx, u[:, :k], tau)
    y1 = l1.argmax(dim=-1)
    l2 = double_forward_logits(p, cfg, ctx, y1, u[:, k:], tau)
    y2 = l2.argmax(dim=-1)
    return torch.cat([y1, y2], dim=1), l1, l2


def argmax_margin(logits: torch.Tensor) -> float:
    top = logits.topk(2, dim=-1).values
    return float((top[..., 0] - top[..., 1]).min())


def noise_inversion_intervals(logits: torch.Tensor, observed: torch.Tensor, tau: float = 1.0):
    """Teacher-CDF interval of each observed token, tokens ranked by descending probability (ties: lower index
    first). logits [R, V], observed [R] -> (lower, upper) float64 [R]."""
    probs = torch.softmax(logits.double() / tau, dim=-1)
    po = probs.gather(1, observed[:, None])
    idx = torch.arange(probs.shape[1])[None, :]
    above = (probs > po) | ((probs == po) & (idx < observed[:, None]))
    lower = (probs * above).sum(dim=-1)
    return lower, lower + po[:, 0]


def distill_loss(p: dict, cfg: Config, ctxs: list[list[int]], us: torch.Tensor, targets: torch.Tensor,
                 tau: float = 1.0):
    """Student staircase over a batch: ctxs B x N', us [B, N', K], targets [B, N', K] (mask_index = ignored).
    loss = mean over slots of each slot's mean CE over non-[MASK] (batch, window) pairs."""
    logits = torch.stack([stair_logits(p, cfg, c, us[b], tau) for b, c in enumerate(ctxs)])
    B, Np, K, V = logits.shape
    ce = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), reduction='none').view(B, Np, K)
    valid = (targets != cfg.mask_index).float()
    per_slot = (ce * valid).sum(dim=(0, 1)) / valid.sum(dim=(0, 1))
    return per_slot.mean(), per_slot


# ---- decoding (section 6) ---------------------------------------------------------------------------------------

def pflm_generate(p: dict, cfg: Config, prompt: list[int], n_new: int, k: int, noise: list[list[float]],
                  lam: float, tau: float = 1.0):
    """noise[s] = the k uniforms of step s. Returns (tokens, smallest argmax margin seen)."""
    ctx = list(prompt)
    out: list[int] = []
    counts = torch.zeros(cfg.vocab_size)
    margin = math.inf
    s = 0
    while len(out) < n_new:
        kk = min(k, n_new - len(out))
        logits = pflm_step_logits(p, cfg, ctx, noise[s][:kk], tau)
        block = []
        for j in range(kk):
            adj = logits[j] - lam * counts
            margin = min(margin, argmax_margin(adj))
            y = int(adj.argmax())
            block.append(y)
            counts[y] += 1
        out += block
        ctx += block
        s += 1
    return out, margin


def ar_generate(p: dict, cfg: Config, prompt: list[int], n_new: int, noise: list[float], temperature: float):
    """Temperature sampling as inverse-CDF sampling with the given uniforms. Returns (tokens, smallest CDF gap)."""
    ctx = list(prompt)
    out: list[int] = []
    gap = math.inf
    for i in range(n_new):
        logits = ar_step_logits(p, cfg, ctx)[None]
        u = torch.tensor([noise[i]], dtype=torch.float64)
        gap = min(gap, cdf_gap(logits, u, temperature))
        y = int(inverse_cdf(logits, u, temperature)[0])
        out.append(y)
        ctx.append(y)
    return out, gap
