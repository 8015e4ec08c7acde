// Builds the native kernels (build/Release/kforce.node) with the node-gyp bundled in npm, offline against the
// installed Node headers. Never fails the install: if no build works, it says so and the TypeScript backend is used.
//   KFORCE_SKIP_NATIVE=1  do not build
//   KFORCE_NO_BLAS=1      build the portable C path even when OpenBLAS is installed
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const addon = join(root, 'build', 'Release', 'kforce.node');

function warn(msg) {
  console.warn(`\n[kforce] WARNING: ${msg}\n[kforce] The portable TypeScript backend will be used (much slower).\n`);
}

function findNodeGyp() {
  const candidates = [
    join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
    process.env.npm_config_node_gyp,
  ];
  try {
    candidates.push(createRequire(import.meta.url).resolve('node-gyp/bin/node-gyp.js'));
  } catch {
    // not installed locally; the npm-bundled copy is the usual one
  }
  return candidates.find((p) => p && existsSync(p)) ?? null;
}

function findNodeDir() {
  // Headers of the running Node: distro installs keep them in <prefix>/include/node.
  for (const dir of [process.env.KFORCE_NODEDIR, '/usr', join(dirname(process.execPath), '..')]) {
    if (dir && existsSync(join(dir, 'include', 'node', 'node_api.h'))) return dir;
  }
  return null;
}

function build(nodeGyp, nodeDir, blas) {
  const args = [nodeGyp, 'rebuild', `--nodedir=${nodeDir}`, '--jobs=2', '--loglevel=warn'];
  if (!blas) args.push('--', '-Dkf_blas=0');
  console.log(`[kforce] building native kernels (${blas ? 'OpenBLAS if pkg-config finds it' : 'portable C, no BLAS'})`);
  const r = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit', env: { ...process.env } });
  return r.status === 0 && existsSync(addon);
}

function loads() {
  // Load in a child process so a broken binary cannot take this script down.
  const r = spawnSync(process.execPath, ['-e', `const a=require(${JSON.stringify(addon)});console.log(JSON.stringify(a.info()))`],
    { encoding: 'utf8' });
  if (r.status !== 0) return { ok: false, why: (r.stderr || r.stdout).trim().split('\n').slice(-3).join(' | ') };
  return { ok: true, info: r.stdout.trim() };
}

function main() {
  if (process.env.KFORCE_SKIP_NATIVE === '1') {
    console.log('[kforce] KFORCE_SKIP_NATIVE=1: native kernels not built');
    return;
  }
  const nodeGyp = findNodeGyp();
  if (!nodeGyp) return warn('node-gyp not found (looked next to npm and in node_modules); native kernels not built.');
  const nodeDir = findNodeDir();
  if (!nodeDir) return warn('Node headers (include/node/node_api.h) not found; set KFORCE_NODEDIR. Native kernels not built.');
  const attempts = process.env.KFORCE_NO_BLAS === '1' ? [false] : [true, false];
  for (const blas of attempts) {
    if (!build(nodeGyp, nodeDir, blas)) {
      console.warn(`[kforce] native build ${blas ? 'with BLAS detection' : 'without BLAS'} failed`);
      continue;
    }
    const l = loads();
    if (l.ok) {
      console.log(`[kforce] native kernels ready: ${addon} ${l.info}`);
      return;
    }
    console.warn(`[kforce] built addon does not load: ${l.why}`);
  }
  warn('the native addon could not be built (see the compiler output above).');
}

main();
process.exit(0);
