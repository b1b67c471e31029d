#!/usr/bin/env node
// Writes the ABIs the Rust bindings are generated from into bindings/abi/, from forge's build
// output (out/) and the npm EntryPoint artifact. `make bindings` runs it after `forge build`;
// CI runs it again and fails when the committed files differ (the bindings drifted).
//
// The cluster is one address with many facets, so its ABI is the union of the facets' ABIs
// (each function, event and error once): one Rust type per struct (e.g. DstackProof) instead of
// one per facet.
'use strict';
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');
const outDir = path.join(root, 'bindings', 'abi');

function forgeAbi(contract) {
  const file = path.join(root, 'out', `${contract}.sol`, `${contract}.json`);
  if (!fs.existsSync(file)) throw new Error(`${file} is missing: run forge build first`);
  return JSON.parse(fs.readFileSync(file, 'utf8')).abi;
}

function signature(item) {
  const types = (item.inputs || []).map((input) => canonicalType(input)).join(',');
  return `${item.type}:${item.name || ''}(${types})`;
}

function canonicalType(param) {
  if (!param.type.startsWith('tuple')) return param.type;
  return `(${param.components.map(canonicalType).join(',')})${param.type.slice('tuple'.length)}`;
}

function union(contracts) {
  const seen = new Map();
  for (const contract of contracts) {
    for (const item of forgeAbi(contract)) {
      if (item.type === 'constructor' || item.type === 'fallback' || item.type === 'receive') continue;
      const key = signature(item);
      if (!seen.has(key)) seen.set(key, item);
    }
  }
  return [...seen.values()].sort((a, b) => signature(a).localeCompare(signature(b)));
}

const abis = {
  Cluster: union([
    'Diamond',
    'DiamondCutFacet',
    'DiamondLoupeFacet',
    'OwnershipFacet',
    'MemberFacet',
    'RegistrationFacet',
    'MessageFacet',
    'SponsorshipFacet',
  ]),
  ClusterFactory: forgeAbi('ClusterFactory'),
  MemberAccount: forgeAbi('MemberAccount'),
  VerifyingPaymaster: forgeAbi('VerifyingPaymaster'),
  IndexerRegistry: forgeAbi('IndexerRegistry'),
  // handleAggregatedOps is left out: AttestMesh uses no aggregator, and its nested struct
  // (IEntryPoint.UserOpsPerAggregator holding PackedUserOperation[]) trips `sol!`'s JSON reader.
  EntryPoint: require(path.join(root, 'node_modules/@account-abstraction/contracts/artifacts/EntryPoint.json')).abi.filter(
    (item) => !JSON.stringify(item.inputs || []).includes('UserOpsPerAggregator'),
  ),
};

fs.mkdirSync(outDir, { recursive: true });
for (const [name, abi] of Object.entries(abis)) {
  fs.writeFileSync(path.join(outDir, `${name}.json`), JSON.stringify(abi, null, 2) + '\n');
}
console.log(`wrote ${Object.keys(abis).length} ABIs to ${path.relative(root, outDir)}/`);
