// Sample quality of the PFLM against its AR teacher (KFORCING.md section 7), on held-out prefixes completed to a
// fixed length:
//  - generative perplexity under an independent judge (a larger AR model, not the teacher) and under the teacher;
//  - mean unigram entropy per sample and the repeated-4-gram rate (guards against repetition);
//  - per-slot agreement with the teacher's own rollout on shared noise: at every PFLM block (context c, uniforms
//    u_1..u_k) the teacher samples y*_1..y*_k by inverse CDF from c with the same uniforms, feeding its own tokens,
//    which is exactly the function G*(c, u) the PFLM was distilled from; slot j agrees when y_j = y*_j.
// Every configuration (AR teacher, PFLM k with and without frequency penalty) uses the same prefixes and seed, so
// uniform t of prefix i is the same number in all of them.
import type { BatchDecoder } from '../model/types.ts';
import { generate } from '../decode/generate.ts';
import { recommendedPenalty } from '../decode/sampling.ts';
import { SlotAgreement, mean, perplexity, repeatedNgramRate, unigramEntropy } from './metrics.ts';
import { scoreContinuations } from './score.ts';
import { markdownTable, num, type Cell } from './report.ts';
import { lineChart } from './svg.ts';

export interface QualityModels {
  teacher: BatchDecoder;
  pflm: BatchDecoder;
  judge: BatchDecoder;
}

export interface QualityOptions {
  prompts: number[][];
  newTokens: number;
  /** PFLM k values (default 1..maxK). */
  ks?: number[];
  /** Penalties per k: 'both' (0 and the recommended value, default), 'none', 'recommended' or fixed values. */
  penalties?: 'both' | 'none' | 'recommended' | number[];
  seed?: number;
  /** Sampling temperature of the teacher = the tau the PFLM imitates (default 1). */
  tau?: number;
  maxBatch?: number;
  onProgress?: (message: string) => void;
}

export interface QualityRow {
  /** 'AR' or 'PFLM k=.. lambda=..'. */
  label: string;
  /** 0 for the AR teacher. */
  k: number;
  penalty: number;
  samples: number;
  tokens: number;
  judgePpl: number;
  teacherPpl: number;
  entropy: number;
  rep4: number;
  /** Per slot (k entries); empty for AR. */
  slotAgreement: number[];
  agreement: number;
}

export interface QualityReport {
  rows: QualityRow[];
  newTokens: number;
  prompts: number;
  seed: number;
  tau: number;
  /** The generated tokens of every configuration (same order as rows), for inspection. */
  samples: number[][][];
}

function penaltiesFor(k: number, p: QualityOptions['penalties']): number[] {
  const rec = recommendedPenalty(k);
  if (Array.isArray(p)) return p;
  if (p === 'none') return [0];
  if (p === 'recommended') return [rec];
  return rec === 0 ? [0] : [0, rec];
}

/** Teacher rollouts from every PFLM block start with the block's own uniforms; returns the agreement counters. */
export function teacherSlotAgreement(teacher: BatchDecoder, prompts: number[][], samples: number[][], k: number,
  seed: number, tau: number, maxBatch?: number): SlotAgreement {
  const agree = new SlotAgreement(k);
  const ctx: number[][] = [];
  const stream: number[] = [];
  const start: number[] = [];
  const want: number[][] = [];
  samples.forEach((s, i) => {
    for (let t = 0; t < s.length; t += k) {
      ctx.push([...prompts[i], ...s.slice(0, t)]);
      stream.push(i);
      start.push(t);
      want.push(s.slice(t, t + k));
    }
  });
  if (ctx.length === 0) return agree;
  const r = generate(teacher, ctx, {
    maxNewTokens: k, seed, streamIds: stream, noiseStart: start, temperature: tau, topP: 1, penalty: 0, eos: [], maxBatch,
  });
  r.tokens.forEach((y, b) => agree.add(want[b], y));
  return agree;
}

export function runQualityBench(models: QualityModels, opts: QualityOptions): QualityReport {
  const { teacher, pflm, judge } = models;
  if (teacher.kind !== 'ar' || judge.kind !== 'ar') throw new Error('bench quality: the teacher and the judge must be AR models');
  if (pflm.kind !== 'pflm') throw new Error('bench quality: the student must be a PFLM');
  const V = teacher.config.vocabSize;
  for (const [name, m] of [['PFLM', pflm], ['judge', judge]] as const) {
    if (m.config.vocabSize !== V) throw new Error(`bench quality: the ${name} has vocabulary ${m.config.vocabSize}, the teacher ${V}`);
  }
  if (opts.prompts.length === 0) throw new Error('bench quality: no prompts');
  const seed = opts.seed ?? 0;
  const tau = opts.tau ?? 1;
  const ks = opts.ks ?? Array.from({ length: pflm.config.maxK }, (_, i) => i + 1);
  for (const k of ks) {
    if (!Number.isInteger(k) || k < 1 || k > pflm.config.maxK) throw new Error(`bench quality: k = ${k} is outside 1..${pflm.config.maxK} (the PFLM's maxK)`);
  }
  const log = opts.onProgress ?? (() => {});
  const prompts = opts.prompts;
  const rows: QualityRow[] = [];
  const allSamples: number[][][] = [];

  const measure = (label: string, k: number, penalty: number, samples: number[][], agree: SlotAgreement | null) => {
    log(`${label}: scoring under the judge`);
    const judgeNll = scoreContinuations(judge, prompts, samples, { maxBatch: opts.maxBatch }).flat();
    log(`${label}: scoring under the teacher`);
    const teacherNll = scoreContinuations(teacher, prompts, samples, { maxBatch: opts.maxBatch }).flat();
    rows.push({
      label, k, penalty,
      samples: samples.length,
      tokens: judgeNll.length,
      judgePpl: perplexity(judgeNll),
      teacherPpl: perplexity(teacherNll),
      entropy: mean(samples.map(unigramEntropy)),
      rep4: mean(samples.map((s) => repeatedNgramRate(s, 4))),
      slotAgreement: agree ? agree.rates() : [],
      agreement: agree ? agree.overall() : NaN,
    });
    allSamples.push(samples);
  };

  log(`AR teacher: sampling ${prompts.length} x ${opts.newTokens} tokens at temperature ${tau}`);
  const ar = generate(teacher, prompts, { maxNewTokens: opts.newTokens, seed, temperature: tau, topP: 1, penalty: 0, eos: [], maxBatch: opts.maxBatch });
  measure('AR teacher', 0, 0, ar.tokens, null);
  for (const k of ks) {
    for (const penalty of penaltiesFor(k, opts.penalties)) {
      const label = `PFLM k=${k} lambda=${penalty}`;
      log(`${label}: sampling`);
      const g = generate(pflm, prompts, { maxNewTokens: opts.newTokens, seed, k, tau, penalty, eos: [], maxBatch: opts.maxBatch });
      log(`${label}: teacher rollouts per block`);
      const agree = teacherSlotAgreement(teacher, prompts, g.tokens, k, seed, tau, opts.maxBatch);
      measure(label, k, penalty, g.tokens, agree);
    }
  }
  return { rows, newTokens: opts.newTokens, prompts: prompts.length, seed, tau, samples: allSamples };
}

// ---- reports -------------------------------------------------------------------------------------------------

export function qualityMarkdown(r: QualityReport): string {
  const maxK = Math.max(0, ...r.rows.map((x) => x.k));
  const headers = ['model', 'k', 'lambda', 'gen PPL (judge)', 'PPL (teacher)', 'unigram entropy', 'rep. 4-gram rate',
    'agreement', ...Array.from({ length: maxK }, (_, j) => `slot ${j + 1}`)];
  const rows: Cell[][] = r.rows.map((x) => [
    x.k === 0 ? 'AR teacher' : 'PFLM', x.k === 0 ? '-' : String(x.k), x.k === 0 ? '-' : String(x.penalty),
    x.judgePpl, x.teacherPpl, x.entropy, x.rep4, num(x.agreement),
    ...Array.from({ length: maxK }, (_, j) => num(x.slotAgreement[j])),
  ]);
  return markdownTable(headers, rows);
}

export function qualityCharts(r: QualityReport): Record<string, string> {
  const plain = r.rows.filter((x) => x.k === 0 || x.penalty === 0);
  const pen = r.rows.filter((x) => x.k === 0 || x.penalty > 0);
  const series = (rows: QualityRow[], f: (x: QualityRow) => number) => rows.map((x) => [x.k, f(x)] as [number, number]);
  const tick = (k: number) => (k === 0 ? 'AR' : `k=${k}`);
  const ks = [...new Set(r.rows.map((x) => x.k))].sort((a, b) => a - b);
  const charts: Record<string, string> = {
    'quality-ppl.svg': lineChart({
      title: 'Generative perplexity vs k (judge model)', xLabel: 'tokens per step (AR = teacher)', yLabel: 'gen. perplexity',
      xTicks: ks, xTickLabel: tick, yFromZero: true,
      series: [
        { name: 'lambda = 0', points: series(plain, (x) => x.judgePpl) },
        ...(pen.length > 1 ? [{ name: 'recommended lambda', points: series(pen, (x) => x.judgePpl) }] : []),
      ],
    }),
    'quality-entropy.svg': lineChart({
      title: 'Unigram entropy per sample vs k', xLabel: 'tokens per step (AR = teacher)', yLabel: 'entropy (nats)',
      xTicks: ks, xTickLabel: tick, yFromZero: true,
      series: [
        { name: 'lambda = 0', points: series(plain, (x) => x.entropy) },
        ...(pen.length > 1 ? [{ name: 'recommended lambda', points: series(pen, (x) => x.entropy) }] : []),
      ],
    }),
  };
  const agreeRows = plain.filter((x) => x.k > 0);
  if (agreeRows.length > 0) {
    charts['quality-slot-agreement.svg'] = lineChart({
      title: 'Agreement with the teacher rollout per slot (lambda = 0)', xLabel: 'slot', yLabel: 'agreement',
      yFromZero: true,
      series: agreeRows.map((x) => ({ name: `k=${x.k}`, points: x.slotAgreement.map((a, j) => [j + 1, a] as [number, number]) })),
    });
  }
  return charts;
}
