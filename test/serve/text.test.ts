// Text in and out: tokenised prompts, detokenised completions, stop sequences (also split across steps and across
// streamed chunks), and the incremental text stream on its own.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { generate } from '../../src/decode/generate.ts';
import { initModel } from '../../src/model/factory.ts';
import { WordCounter } from '../../src/train/bpe.ts';
import { Tokenizer } from '../../src/train/tokenizer.ts';
import { TextStream } from '../../src/serve/text-stream.ts';
import { post, postStream, startServer, tinyConfig, type CompletionBody, type Running } from './helpers.ts';

const CORPUS = 'The cat sat on the mat. The dog sat on the log. A cat and a dog met on the road; they sat and talked. '
  + 'Où est le café? Ça coûte 3€. ';

let tok: Tokenizer;
let servers: Running[];

before(async () => {
  const wc = new WordCounter();
  for (let i = 0; i < 4; i++) wc.add(CORPUS);
  tok = Tokenizer.trainBpe(wc, 300);
  const V = tok.vocabSize;
  assert.equal(tok.maskId, V - 1);
  servers = [
    await startServer(initModel(tinyConfig(V, 0), 'ar', 3), { tokenizer: tok }),
    await startServer(initModel(tinyConfig(V, 4), 'pflm', 3), { tokenizer: tok, k: 3, penalty: 0.45 }),
  ];
});

after(async () => {
  for (const s of servers) await s.server.shutdown();
});

function streamedText(events: string[]): { text: string; finish: string | null; tokens: number[] } {
  const chunks = events.slice(0, -1).map((e) => JSON.parse(e) as CompletionBody);
  return {
    text: chunks.map((c) => c.choices[0].text).join(''),
    finish: chunks.at(-1)!.choices[0].finish_reason,
    tokens: chunks.flatMap((c) => c.choices[0].token_ids),
  };
}

/** A two-character piece of `text` (no replacement character) that first occurs at or after `from`. */
function pickStop(text: string, from: number): { stop: string; at: number } {
  for (let i = from; i + 2 <= text.length; i++) {
    const s = text.slice(i, i + 2);
    if (!s.includes('\uFFFD') && text.indexOf(s) === i) return { stop: s, at: i };
  }
  throw new Error(`no usable stop sequence in ${JSON.stringify(text)}`);
}

describe('text prompts', () => {
  test('a text prompt is tokenised; the completion text is the decoded tokens', async () => {
    for (const r of servers) {
      const prompt = 'The cat sat on';
      const { status, json } = await post(r.url, { prompt, max_tokens: 12, seed: 8 });
      assert.equal(status, 200, JSON.stringify(json));
      const ids = tok.encode(prompt);
      assert.equal(json.usage!.prompt_tokens, ids.length);
      const c = json.choices[0];
      assert.equal(c.text, tok.decode(c.token_ids));
      const k = r.model.kind === 'pflm' ? 3 : undefined;
      const want = generate(r.model.decoder(), [ids], { maxNewTokens: 12, seed: 8, k, penalty: k ? 0.45 : 0 }).tokens[0];
      assert.deepEqual(c.token_ids, want);
      // The same prompt as ids gives the same completion.
      const byIds = await post(r.url, { prompt: ids, max_tokens: 12, seed: 8 });
      assert.deepEqual(byIds.json.choices[0].token_ids, c.token_ids);
    }
  });

  test('a stop sequence cuts the text before it and ends with finish_reason stop, plain and streamed', async () => {
    for (const r of servers) {
      const body = { prompt: 'A dog', max_tokens: 40, seed: 12 };
      const full = (await post(r.url, body)).json.choices[0];
      const { stop, at } = pickStop(full.text, 5);
      const { json } = await post(r.url, { ...body, stop: [stop, 'never-seen-stop'] });
      const c = json.choices[0];
      assert.equal(c.finish_reason, 'stop');
      assert.equal(c.text, full.text.slice(0, at));
      assert.ok(c.token_ids.length < full.token_ids.length, 'generation stopped early');
      assert.deepEqual(c.token_ids, full.token_ids.slice(0, c.token_ids.length));
      const s = streamedText((await postStream(r.url, { ...body, stop })).events);
      assert.equal(s.text, c.text, 'streamed text never shows the stop sequence or text after it');
      assert.equal(s.finish, 'stop');
      // Without a stop sequence the streamed text equals the whole completion.
      const all = streamedText((await postStream(r.url, body)).events);
      assert.equal(all.text, full.text);
      assert.equal(all.finish, 'length');
    }
  });
});

describe('TextStream', () => {
  // A toy detokeniser: ids are characters, except 900/901, which are the two halves of 'é' (a split character).
  const detok = {
    decode: (ids: number[]): string => {
      let s = '';
      for (let i = 0; i < ids.length; i++) {
        if (ids[i] === 900 && ids[i + 1] === 901) {
          s += 'é';
          i++;
        } else if (ids[i] === 900 || ids[i] === 901) {
          s += '\uFFFD';
        } else {
          s += String.fromCharCode(ids[i]);
        }
      }
      return s;
    },
  };
  const ids = (s: string): number[] => [...s].map((c) => c.charCodeAt(0));

  test('holds back a possible stop prefix and releases it when the stop does not complete', () => {
    const t = new TextStream(detok, ['END']);
    assert.equal(t.push(ids('abcE')), 'abc');
    assert.equal(t.push(ids('N')), '');
    assert.equal(t.push(ids('x')), 'ENx');
    assert.equal(t.push(ids('yE')), 'y');
    assert.equal(t.flush(), 'E');
    assert.equal(t.finalText(), 'abcENxyE');
    assert.equal(t.stopped, false);
  });

  test('a stop sequence split across pushes stops at its start; later text is dropped', () => {
    const t = new TextStream(detok, ['END', 'xy']);
    assert.equal(t.push(ids('abE')), 'ab');
    assert.equal(t.push(ids('NDzz')), '');
    assert.ok(t.stopped);
    assert.equal(t.push(ids('more')), '');
    assert.equal(t.flush(), '');
    assert.equal(t.finalText(), 'ab');
    const u = new TextStream(detok, ['END', 'xy']);
    assert.equal(u.push(ids('qxyEND')), 'q', 'the earliest of several stops wins');
  });

  test('a character split across tokens is released whole', () => {
    const t = new TextStream(detok, []);
    assert.equal(t.push([...ids('caf'), 900]), 'caf');
    assert.equal(t.push([901, ...ids('!')]), 'é!');
    assert.equal(t.finalText(), 'café!');
  });
});
