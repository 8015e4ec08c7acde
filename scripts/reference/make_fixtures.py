"""Builds the tiny reference fixtures under test/fixtures/ (run where PyTorch is installed):

    python3 scripts/reference/make_fixtures.py --out DIR     # writes DIR/fixtures.tar (unpack into test/fixtures/)

Contents (all seeded, so a rerun gives the same bytes for the same PyTorch version):
  tiny-ar.safetensors         AR model V=37 D=48 H=2 2 blocks [MASK]=3, no metadata (config inferred from shapes)
  tiny-pflm.safetensors       PFLM V=37 D=32 H=4 2 blocks [MASK]=36 maxK=4, config in __metadata__ (kforce_config)
  tiny-pflm.ckpt              same PFLM weights as a Lightning checkpoint (state_dict with backbone. prefix, fp32)
  tiny-pflm-fp16.ckpt         same, every float tensor stored as float16
  tiny-ar-raw.pt              the AR weights as a bare nn.Module state_dict (no prefix)
  mixed-dtypes.pt             f32/f16/bf16/f64/i64 tensors, views with offsets, transposes, stride-0 expands
  mixed-dtypes.safetensors    the contiguous float tensors of mixed-dtypes.pt in their own dtypes (written by the
                              safetensors library, so our reader is checked against an independent writer)
  mixed-dtypes-f32.safetensors  every tensor of mixed-dtypes.pt as contiguous float32 (expected import result)
  reference.safetensors       reference outputs (logits, log-probs, noise embeddings, losses, gradients)
  reference.json              the inputs (tokens, uniforms, schedules of session operations) and token outputs
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tarfile
import tempfile
from collections import OrderedDict

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kforcing_ref as ref  # noqa: E402

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

AR_CFG = ref.Config(vocab_size=37, hidden=48, n_heads=2, n_blocks=2, mask_index=3)
PF_CFG = ref.Config(vocab_size=37, hidden=32, n_heads=4, n_blocks=2, mask_index=36)
PF_MAXK = 4
PF_MAXSEQ = 64

# Thresholds that keep token fixtures away from decision boundaries, so float32 rounding differences between
# implementations (~1e-6) cannot flip a token.
MIN_MARGIN = 1e-3
MIN_CDF_GAP = 1e-4

checks: list[str] = []


def check(name: str, err: float, tol: float) -> None:
    line = f'{name}: max abs diff {err:.3e} (tol {tol:.0e})'
    checks.append(line)
    print(line, flush=True)
    if not err <= tol:
        raise SystemExit(f'self-check failed: {line}')


def as_module(params: dict[str, torch.Tensor], dtype=None) -> torch.nn.Module:
    """An nn.Module tree with the official names, so state_dict() is exactly what Lightning would save
    (OrderedDict with _metadata, rotary inv_freq as a buffer)."""
    root = torch.nn.Module()
    for name, t in params.items():
        *path, leaf = name.split('.')
        m = root
        for part in path:
            if not hasattr(m, part):
                m.add_module(part, torch.nn.Module())
            m = getattr(m, part)
        v = t.clone() if dtype is None else t.to(dtype)
        if leaf == 'inv_freq':
            m.register_buffer(leaf, v)
        else:
            m.register_parameter(leaf, torch.nn.Parameter(v, requires_grad=True))
    return root


def lightning_ckpt(params: dict[str, torch.Tensor], dtype=None) -> dict:
    lit = torch.nn.Module()
    lit.add_module('backbone', as_module(params, dtype))
    sd = lit.state_dict()
    # A non-backbone entry, as the training module's other buffers would be: the importer must drop it.
    sd['noise.sigma_max'] = torch.tensor(20.0)
    return {
        'epoch': 0,
        'global_step': 0,
        'pytorch-lightning_version': '2.6.6',
        'state_dict': sd,
        'loops': {'fit_loop': {'state_dict': {}, 'epoch_progress': {'total': {'ready': 1}}}},
        'callbacks': {},
        'optimizer_states': [{
            'state': {0: {'step': torch.tensor(3.0), 'exp_avg': torch.zeros(4), 'exp_avg_sq': torch.ones(4)}},
            'param_groups': [{'lr': 3e-4, 'betas': (0.9, 0.999), 'eps': 1e-8, 'weight_decay': 0.0,
                              'amsgrad': False, 'params': [0]}],
        }],
        'lr_schedulers': [],
        'hparams_name': 'config',
        # An arbitrary Python class inside the pickle: importers must tolerate objects they cannot rebuild.
        'hyper_parameters': {'config': argparse.Namespace(k_max=PF_MAXK, lr=3e-4, precision='fp32')},
    }


def tokens(gen: torch.Generator, n: int, cfg: ref.Config) -> list[int]:
    out = []
    while len(out) < n:
        t = int(torch.randint(0, cfg.vocab_size, (1,), generator=gen))
        if t != cfg.mask_index:
            out.append(t)
    return out


def uniforms(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.rand(*shape, dtype=torch.float64, generator=gen)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument('--out', required=True)
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    # Files are built in a scratch folder; only the tar goes to --out (the device machine returns few files).
    work = tempfile.mkdtemp(prefix='kforce-fixtures-')
    print('torch', torch.__version__, flush=True)

    gen = torch.Generator().manual_seed(20261127)
    P_ar = ref.init_params(AR_CFG, pflm=False, gen=gen)
    P_pf = ref.init_params(PF_CFG, pflm=True, gen=gen)

    # ---- model files -----------------------------------------------------------------------------------------
    pf_config = {'vocabSize': PF_CFG.vocab_size, 'hiddenSize': PF_CFG.hidden, 'nHeads': PF_CFG.n_heads,
                 'nBlocks': PF_CFG.n_blocks, 'maskIndex': PF_CFG.mask_index, 'maxK': PF_MAXK,
                 'maxSeqLen': PF_MAXSEQ}
    save_file(P_ar, os.path.join(work, 'tiny-ar.safetensors'))
    save_file(P_pf, os.path.join(work, 'tiny-pflm.safetensors'),
              metadata={'format': 'pt', 'kforce_config': json.dumps(pf_config)})
    torch.save(lightning_ckpt(P_pf), os.path.join(work, 'tiny-pflm.ckpt'))
    torch.save(lightning_ckpt(P_pf, torch.float16), os.path.join(work, 'tiny-pflm-fp16.ckpt'))
    torch.save(as_module(P_ar).state_dict(), os.path.join(work, 'tiny-ar-raw.pt'))

    for fname, P, key_prefix, dtype in [('tiny-pflm.ckpt', P_pf, 'backbone.', torch.float32),
                                        ('tiny-pflm-fp16.ckpt', P_pf, 'backbone.', torch.float16),
                                        ('tiny-ar-raw.pt', P_ar, '', torch.float32)]:
        obj = torch.load(os.path.join(work, fname), weights_only=False)
        sd = obj['state_dict'] if 'state_dict' in obj else obj
        err = max(float((sd[key_prefix + k].float() - v.to(dtype).float()).abs().max()) for k, v in P.items())
        check(f'torch.load({fname}) equals the weights', err, 0.0)
    for fname, P in [('tiny-ar.safetensors', P_ar), ('tiny-pflm.safetensors', P_pf)]:
        back = load_file(os.path.join(work, fname))
        check(f'load_file({fname}) equals the weights',
              max(float((back[k] - v).abs().max()) for k, v in P.items()), 0.0)

    # ---- mixed dtypes and strided views ---------------------------------------------------------------------
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6) * 0.37 - 3.0
    mixed = {
        'f32': base.clone(),
        'f16': (base / 7).half(),
        'bf16': (base / 5).bfloat16(),
        'f64': base.double() / 3,
        'i64': torch.tensor([-3, 0, 7, 2 ** 40]),
        'transposed': base.t(),
        'slice': base[1:3, 2:5],
        'row': base[2],
        'expanded': torch.arange(3.0).expand(2, 3),
        'bf16_t': (base / 5).bfloat16().t(),
        'scalar': torch.tensor(2.5),
        'empty': torch.zeros(0, 3),
    }
    torch.save(mixed, os.path.join(work, 'mixed-dtypes.pt'))
    save_file({k: mixed[k].clone().contiguous() for k in ['f32', 'f16', 'bf16', 'f64', 'scalar', 'empty']},
              os.path.join(work, 'mixed-dtypes.safetensors'), metadata={'source': 'safetensors.torch'})
    save_file({k: v.float().clone().contiguous() for k, v in mixed.items()},
              os.path.join(work, 'mixed-dtypes-f32.safetensors'))

    # ---- reference outputs -----------------------------------------------------------------------------------
    T: dict[str, torch.Tensor] = {}
    J: dict = {
        'generator': f'scripts/reference/make_fixtures.py, torch {torch.__version__}',
        'models': {
            'ar': {'file': 'tiny-ar.safetensors', 'raw': 'tiny-ar-raw.pt', 'maskIndex': AR_CFG.mask_index,
                   'config': {'vocabSize': AR_CFG.vocab_size, 'hiddenSize': AR_CFG.hidden,
                              'nHeads': AR_CFG.n_heads, 'nBlocks': AR_CFG.n_blocks,
                              'maskIndex': AR_CFG.mask_index, 'maxK': 0}},
            'pflm': {'file': 'tiny-pflm.safetensors', 'ckpt': 'tiny-pflm.ckpt', 'ckptFp16': 'tiny-pflm-fp16.ckpt',
                     'maskIndex': PF_CFG.mask_index, 'config': pf_config},
        },
    }
    rng = torch.Generator().manual_seed(7)

    with torch.no_grad():
        # AR logits and log-probs.
        ar_tokens = tokens(rng, 12, AR_CFG)
        L = ref.ar_logits(P_ar, AR_CFG, ar_tokens)
        T['ar.logits'] = L
        T['ar.logprobs_t0.7'] = ref.log_probs(L, 0.7)
        J['ar'] = {'tokens': ar_tokens, 'temperature': 0.7}
        for n in (1, 5, 12):
            check(f'AR step over prefix {n} equals full forward row {n - 1}',
                  float((ref.ar_step_logits(P_ar, AR_CFG, ar_tokens[:n]) - L[n - 1]).abs().max()), 1e-5)

        # Stage-1 inverse-CDF targets (AR teacher), tau 1 and 0.7.
        J['stage1'] = []
        for tau in (1.0, 0.7):
            teacher = ref.ar_logits(P_ar, AR_CFG, ar_tokens[:-1])
            for _ in range(1000):
                u = uniforms(rng, len(ar_tokens) - 1)
                if ref.cdf_gap(teacher, u, tau) > MIN_CDF_GAP:
                    break
            else:
                raise SystemExit('no stage-1 uniforms away from CDF boundaries')
            tg = ref.stage1_targets(P_ar, AR_CFG, ar_tokens, u, tau)
            J['stage1'].append({'data': ar_tokens, 'u': u.tolist(), 'tau': tau, 'targets': tg.tolist()})

        # Noise-inversion intervals of the observed continuation.
        lo, hi = ref.noise_inversion_intervals(ref.ar_logits(P_ar, AR_CFG, ar_tokens[:-1]),
                                               torch.tensor(ar_tokens[1:]))
        T['noise_inversion.lower'] = lo
        T['noise_inversion.upper'] = hi
        J['noise_inversion'] = {'data': ar_tokens, 'tau': 1.0}

        # AR continuous-batching session (ragged prompts, sequences joining and leaving).
        J['ar_session'] = ar_session(P_ar, rng, T)

        # AR generation by inverse-CDF sampling at temperature 0.7.
        J['ar_generate'] = ar_generation(P_ar, rng)

        # Noise embeddings.
        u_emb = torch.tensor([0.0, 0.125, 0.5, 0.731, 0.999, 0.3141592653589793], dtype=torch.float64)
        T['noise.embed'] = ref.noise_embed(P_pf, PF_CFG, u_emb, 1.0)
        T['noise.embed_tau0.7'] = ref.noise_embed(P_pf, PF_CFG, u_emb, 0.7)
        J['noise_embed'] = {'u': u_emb.tolist(), 'taus': [1.0, 0.7]}

        # Staircase logits: k = 4 at tau 1, k = 2 at tau 0.7.
        J['stair'] = []
        for name, n_ctx, k, tau in [('stair.k4', 7, 4, 1.0), ('stair.k2_tau0.7', 5, 2, 0.7)]:
            ctx = tokens(rng, n_ctx, PF_CFG)
            u = uniforms(rng, n_ctx, k)
            S = ref.stair_logits(P_pf, PF_CFG, ctx, u, tau)
            T[name] = S
            J['stair'].append({'tensor': name, 'context': ctx, 'noise': u.tolist(), 'tau': tau})
            err = 0.0
            for t in range(n_ctx):
                for a in range(1, k + 1):
                    step = ref.pflm_step_logits(P_pf, PF_CFG, ctx[: t + 1], u[t, :a].tolist(), tau)
                    err = max(err, float((step[a - 1] - S[t, a - 1]).abs().max()))
            check(f'{name}: staircase slot equals a cached-decode step over the window', err, 1e-4)

        # PFLM continuous-batching session.
        J['pflm_session'] = pflm_session(P_pf, rng, T)

        # PFLM generation with frequency penalty.
        J['pflm_generate'] = pflm_generation(P_pf, rng)

        # Self-forcing targets: teacher PFLM(k=2) -> student PFLM(4) (the same weights: the student starts as a
        # copy of the teacher).
        k = 2
        n_win = 6
        batch_ctx, batch_u, batch_tg = [], [], []
        for b in range(2):
            data = tokens(rng, n_win + 2 * k, PF_CFG)
            ctx = data[:n_win]
            u = uniforms(rng, n_win, 2 * k)
            for _ in range(200):
                tg, l1, l2 = ref.self_forcing_targets(P_pf, PF_CFG, ctx, u)
                m1 = (l1.topk(2, -1).values[..., 0] - l1.topk(2, -1).values[..., 1]).min(-1).values
                m2 = (l2.topk(2, -1).values[..., 0] - l2.topk(2, -1).values[..., 1]).min(-1).values
                bad = (torch.minimum(m1, m2) < MIN_MARGIN).nonzero().flatten().tolist()
                if not bad:
                    break
                for t in bad:
                    u[t] = uniforms(rng, 2 * k)
            else:
                raise SystemExit('no self-forcing uniforms away from argmax ties')
            T[f'selfforce.{b}.pass1'] = l1
            T[f'selfforce.{b}.pass2'] = l2
            err = 0.0
            for t in range(n_win):
                step = ref.pflm_step_logits(P_pf, PF_CFG, ctx[: t + 1] + tg[t, :k].tolist(), u[t, k:].tolist())
                err = max(err, float((step - l2[t]).abs().max()))
            check(f'self-forcing pass 2 (sequence {b}) equals a decode step after the pass-1 tokens', err, 1e-4)
            batch_ctx.append(ctx)
            batch_u.append(u)
            batch_tg.append(tg)
            J.setdefault('selfforce', []).append({'data': data, 'context': ctx, 'noise': u.tolist(),
                                                  'teacherK': k, 'tau': 1.0, 'targets': tg.tolist()})

    # Distillation loss on the student (K = 4) with a few [MASK] targets, plus gradients of every parameter.
    us = torch.stack(batch_u)
    targets = torch.stack(batch_tg).clone()
    targets[0, 2, 1] = PF_CFG.mask_index
    targets[0, 0, 3] = PF_CFG.mask_index
    targets[1, 5, :] = PF_CFG.mask_index
    params = {n: (t.clone().requires_grad_(n != 'rotary_emb.inv_freq')) for n, t in P_pf.items()}
    loss, per_slot = ref.distill_loss(params, PF_CFG, batch_ctx, us, targets)
    loss.backward()
    T['distill.loss'] = loss.detach().reshape(1)
    T['distill.perSlot'] = per_slot.detach()
    for n, t in params.items():
        if t.grad is not None:
            T['grad.' + n] = t.grad.detach()
    J['distill'] = {'context': batch_ctx, 'noise': us.tolist(), 'targets': targets.tolist(), 'tau': 1.0,
                    'K': 2 * k, 'gradients': sorted(n for n, t in params.items() if t.grad is not None)}
    print(f'distill loss {float(loss):.6f} perSlot {per_slot.tolist()}', flush=True)

    # Fresh storages: the safetensors writer refuses views that share memory.
    T = {n: t.detach().clone().contiguous() for n, t in T.items()}
    save_file(T, os.path.join(work, 'reference.safetensors'), metadata={'generator': J['generator']})
    J['checks'] = checks
    with open(os.path.join(work, 'reference.json'), 'w') as f:
        json.dump(J, f, indent=1)

    with tarfile.open(os.path.join(out, 'fixtures.tar'), 'w') as tar:
        for name in sorted(os.listdir(work)):
            tar.add(os.path.join(work, name), arcname=name)
            print(f'{name}: {os.path.getsize(os.path.join(work, name))} bytes', flush=True)


def ar_session(P, rng, T) -> dict:
    """Ops: open/append/close/step. A step feeds each named sequence's pending tokens; its output for sequence s
    is tensor '<prefix>.<step>.<s>' (AR: [V] logits of the next position)."""
    ctx: dict[str, list[int]] = {}
    ops: list[dict] = []
    n_step = 0

    def open_(s, n):
        ctx[s] = tokens(rng, n, AR_CFG)
        ops.append({'op': 'open', 'seq': s, 'prompt': list(ctx[s])})

    def append(s, toks):
        ctx[s] += toks
        ops.append({'op': 'append', 'seq': s, 'tokens': toks})

    def step(seqs):
        nonlocal n_step
        outs = []
        for s in seqs:
            name = f'ar_session.{n_step}.{s}'
            T[name] = ref.ar_step_logits(P, AR_CFG, ctx[s])
            outs.append(name)
        ops.append({'op': 'step', 'seqs': seqs, 'outputs': outs})
        n_step += 1
        return [int(T[o].argmax()) for o in outs]

    open_('A', 3)
    open_('B', 6)
    ya, yb = step(['A', 'B'])
    append('A', [ya])
    append('B', [yb] + tokens(rng, 1, AR_CFG))
    yb, ya = step(['B', 'A'])
    open_('C', 2)
    append('A', [ya])
    ya, yc = step(['A', 'C'])
    ops.append({'op': 'close', 'seq': 'A'})
    append('B', [yb])
    append('C', [yc])
    step(['C', 'B'])
    return {'model': 'ar', 'ops': ops}


def pflm_session(P, rng, T) -> dict:
    """As ar_session; a step also carries per sequence its k uniforms (same k for all sequences of a step) and tau;
    outputs are [k, V] logits of the noise slots."""
    ctx: dict[str, list[int]] = {}
    ops: list[dict] = []
    n_step = 0

    def open_(s, n):
        ctx[s] = tokens(rng, n, PF_CFG)
        ops.append({'op': 'open', 'seq': s, 'prompt': list(ctx[s])})

    def append(s, toks):
        ctx[s] += toks
        ops.append({'op': 'append', 'seq': s, 'tokens': toks})

    def step(seqs, k, taus):
        nonlocal n_step
        outs, noise = [], []
        for s, tau in zip(seqs, taus):
            u = uniforms(rng, k).tolist()
            name = f'pflm_session.{n_step}.{s}'
            T[name] = ref.pflm_step_logits(P, PF_CFG, ctx[s], u, tau)
            outs.append(name)
            noise.append(u)
        ops.append({'op': 'step', 'seqs': seqs, 'noise': noise, 'tau': taus, 'outputs': outs})
        n_step += 1
        return [T[o].argmax(-1).tolist() for o in outs]

    open_('A', 3)
    open_('B', 5)
    ya, yb = step(['A', 'B'], 4, [1.0, 1.0])
    append('A', ya)
    append('B', yb)
    yb, ya = step(['B', 'A'], 2, [1.0, 0.7])
    open_('C', 2)
    append('A', ya)
    ya, yc = step(['A', 'C'], 3, [1.0, 1.0])
    ops.append({'op': 'close', 'seq': 'A'})
    append('B', yb)
    append('C', yc)
    step(['C', 'B'], 1, [1.0, 1.0])
    return {'model': 'pflm', 'ops': ops}


def ar_generation(P, rng) -> dict:
    prompts = [tokens(rng, 3, AR_CFG), tokens(rng, 5, AR_CFG)]
    n_new, temp = 8, 0.7
    noise, outs = [], []
    for pr in prompts:
        for _ in range(1000):
            u = uniforms(rng, n_new).tolist()
            toks, gap = ref.ar_generate(P, AR_CFG, pr, n_new, u, temp)
            if gap > MIN_CDF_GAP:
                break
        else:
            raise SystemExit('no AR generation uniforms away from CDF boundaries')
        noise.append(u)
        outs.append(toks)
    return {'model': 'ar', 'temperature': temp, 'maxNewTokens': n_new, 'prompts': prompts, 'noise': noise,
            'tokens': outs}


def pflm_generation(P, rng) -> dict:
    prompts = [tokens(rng, 3, PF_CFG), tokens(rng, 6, PF_CFG)]
    n_new, k, lam = 10, 4, 0.5
    steps = math.ceil(n_new / k)
    noise, outs = [], []
    for pr in prompts:
        for _ in range(1000):
            u = uniforms(rng, steps, k).tolist()
            toks, margin = ref.pflm_generate(P, PF_CFG, pr, n_new, k, u, lam)
            if margin > MIN_MARGIN:
                break
        else:
            raise SystemExit('no PFLM generation uniforms away from argmax ties')
        noise.append(u)
        outs.append(toks)
    return {'model': 'pflm', 'k': k, 'lambda': lam, 'tau': 1.0, 'maxNewTokens': n_new, 'prompts': prompts,
            'noise': noise, 'tokens': outs}


if __name__ == '__main__':
    main()
