// Writes THIRD_PARTY_LICENSES.txt: the license of every npm package whose
// code esbuild put in the bundles, found from esbuild's metafile.
// Usage: node licenses.mjs <metafile.json> <out.txt>
import { readFileSync, readdirSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';

const [metaPath, outPath] = process.argv.slice(2);
const meta = JSON.parse(readFileSync(metaPath, 'utf8'));
const pkgs = new Set();
for (const input of Object.keys(meta.inputs)) {
  const m = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(input);
  if (m) pkgs.add(m[1]);
}
let out = 'Third-party software bundled in these files, with their licenses.\n';
for (const name of [...pkgs].sort()) {
  const dir = join('node_modules', name);
  const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
  const files = existsSync(dir) ? readdirSync(dir).filter((f) => /^(licen[cs]e|copying)/i.test(f)) : [];
  out += `\n${'='.repeat(78)}\n${name} ${pkg.version} (${pkg.license || 'see below'})\n${'='.repeat(78)}\n`;
  out += files.length ? files.map((f) => readFileSync(join(dir, f), 'utf8').trim()).join('\n\n') + '\n' : `License: ${pkg.license || 'unknown'} (no license file in the package)\n`;
}
writeFileSync(outPath, out);
