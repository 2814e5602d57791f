// Run after tsup (`npm run build`): the dist has ESM, CJS and declarations
// for both entry points, and the core loads in Node where React cannot be
// resolved (a copy of dist/ in a temporary directory, away from node_modules).
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const dist = new URL('../dist/', import.meta.url);
const expected = ['index.js', 'index.cjs', 'index.d.ts', 'index.d.cts', 'core.js', 'core.cjs', 'core.d.ts', 'core.d.cts'];
const missing = expected.filter((file) => !existsSync(new URL(file, dist)));
if (missing.length > 0) throw new Error(`dist is missing ${missing.join(', ')}`);

for (const file of ['index.js', 'index.cjs']) {
  const text = readFileSync(new URL(file, dist), 'utf8');
  if (!/from\s*["']react["']|require\(["']react["']\)/.test(text)) throw new Error(`${file} should import react`);
}

// Root and `/core` share one copy of each class in both formats.
const requireHere = createRequire(import.meta.url);
const [cjsRoot, cjsCore] = [requireHere('../dist/index.cjs'), requireHere('../dist/core.cjs')];
const [esmRoot, esmCore] = [await import(new URL('index.js', dist).href), await import(new URL('core.js', dist).href)];
if (cjsRoot.ContextChannel !== cjsCore.ContextChannel || esmRoot.ActionError !== esmCore.ActionError) {
  throw new Error('the root and /core entry points hold different copies of the classes');
}

const isolated = mkdtempSync(join(tmpdir(), 'rxdjango-core-'));
try {
  cpSync(dist, join(isolated, 'dist'), { recursive: true });
  writeFileSync(join(isolated, 'package.json'), JSON.stringify({ type: 'module' }));
  const esm = await import(pathToFileURL(join(isolated, 'dist', 'core.js')).href);
  const cjs = createRequire(join(isolated, 'x.cjs'))(join(isolated, 'dist', 'core.cjs'));
  for (const [name, mod] of [['ESM', esm], ['CJS', cjs]]) {
    if (typeof mod.ContextChannel !== 'function') throw new Error(`${name} core lacks ContextChannel`);
    class Probe extends mod.ContextChannel {
      static endpoint = 'ws/probe/{id}/';
      static anchorType = 'probe.Probe';
      static model = { 'probe.Probe': {} };
      constructor() {
        super({ id: 1 }, 'token', { baseURL: 'ws://127.0.0.1:1/' });
      }
    }
    const probe = new Probe();
    if (probe.url !== 'ws://127.0.0.1:1/ws/probe/1/' || probe.status !== 'idle') throw new Error(`${name} core misbehaves`);
  }
  let reactLoaded = true;
  try {
    await import(pathToFileURL(join(isolated, 'dist', 'index.js')).href);
  } catch {
    reactLoaded = false;
  }
  if (reactLoaded) throw new Error('react resolved in the isolated copy: the core check proves nothing');
} finally {
  rmSync(isolated, { recursive: true, force: true });
}
console.log('dist ok: ESM + CJS + .d.ts; @rxdjango/react/core loads without react');
