#!/usr/bin/env node
// A `solc` executable for forge, backed by solc-js (the official compiler built to wasm) from
// the npm registry. Native solc downloads are unreachable on our machines, so forge is pointed
// here through `solc = "tools/solc-shim.js"` in foundry.toml. forge needs exactly two things:
// `--version` in the native format, and `--standard-json` reading the input from stdin.
'use strict';
const fs = require('fs');
const path = require('path');
const solc = require('solc');

const args = process.argv.slice(2);

if (args.includes('--version')) {
  // forge parses "Version: X.Y.Z+commit.HASH"; solc-js reports "0.8.30+commit.73712a01.Emscripten.clang".
  const version = solc.version().replace(/\.Emscripten\.clang$/, '');
  process.stdout.write(`solc, the solidity compiler commandline interface\nVersion: ${version}.Linux.g++\n`);
  process.exit(0);
}

if (!args.includes('--standard-json')) {
  process.stderr.write('solc-shim: only --version and --standard-json are supported\n');
  process.exit(2);
}

// Imports are resolved relative to --base-path (forge passes the project root) and every
// --include-path, the same lookup order native solc uses.
function flagValues(name) {
  const values = [];
  args.forEach((arg, i) => {
    if (arg === name && i + 1 < args.length) values.push(args[i + 1]);
  });
  return values;
}
const roots = [...flagValues('--base-path'), ...flagValues('--include-path'), process.cwd()];

function readImport(importPath) {
  const candidates = path.isAbsolute(importPath) ? [importPath] : roots.map((root) => path.resolve(root, importPath));
  for (const candidate of candidates) {
    try {
      return { contents: fs.readFileSync(candidate, 'utf8') };
    } catch (_) {
      // Try the next root.
    }
  }
  return { error: `solc-shim: import not found: ${importPath} (searched ${roots.join(', ')})` };
}

const input = fs.readFileSync(0, 'utf8');
process.stdout.write(solc.compile(input, { import: readImport }));
