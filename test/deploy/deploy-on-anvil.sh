#!/usr/bin/env bash
# Deploys the contracts to a real anvil with script/Deploy.s.sol, twice, and checks that the
# second run finds everything in place and sends no transaction (idempotency), and that
# every recorded address has code. EntryPoint v0.7 is put at its canonical address first, from
# the npm bytecode through the deterministic CREATE2 deployer, exactly as it exists on Base.
set -euo pipefail
cd "$(dirname "$0")/../.."

# Native binaries: the node_modules/.bin wrappers exit 0 even when the tool fails.
FOUNDRY=node_modules/@foundry-rs
PORT=${ANVIL_PORT:-18545}
RPC=http://127.0.0.1:$PORT
# anvil's first well-known development key (public knowledge, devnet only).
KEY=0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80
ENTRY_POINT=0x0000000071727De22E5E9d8BAf0edAc6f37da032
CREATE2_DEPLOYER=0x4e59b44847b379578588920cA78FbF26c0B4956C
ENTRY_POINT_SALT=90d8084deab30c2a37c45e8d47f49f2f7965183cb6990a98943ef94940681de3
WORK=$(mktemp -d)
# forge may only write inside the project (fs_permissions); the name is git-ignored.
OUT=deployments/test-anvil-$PORT.json

say() { printf '[deploy-on-anvil] %s\n' "$*"; }
cleanup() {
  if [[ -n "${ANVIL_PID:-}" ]]; then kill "$ANVIL_PID" 2>/dev/null || true; wait "$ANVIL_PID" 2>/dev/null || true; fi
  rm -rf "$WORK" "$OUT"
}
trap cleanup EXIT

say "starting anvil on $RPC"
"$FOUNDRY/anvil-linux-amd64/bin/anvil" --port "$PORT" --silent &
ANVIL_PID=$!
for _ in $(seq 1 50); do
  "$FOUNDRY/cast-linux-amd64/bin/cast" chain-id --rpc-url "$RPC" >/dev/null 2>&1 && break
  sleep 0.1
done
"$FOUNDRY/cast-linux-amd64/bin/cast" chain-id --rpc-url "$RPC" >/dev/null || { say "anvil did not come up"; exit 1; }

say "placing EntryPoint v0.7 at $ENTRY_POINT through $CREATE2_DEPLOYER"
BYTECODE=$(node -e "process.stdout.write(require('./node_modules/@account-abstraction/contracts/artifacts/EntryPoint.json').bytecode.slice(2))")
"$FOUNDRY/cast-linux-amd64/bin/cast" send --rpc-url "$RPC" --private-key "$KEY" --gas-limit 10000000 \
  "$CREATE2_DEPLOYER" "0x${ENTRY_POINT_SALT}${BYTECODE}" >/dev/null
[[ $("$FOUNDRY/cast-linux-amd64/bin/cast" code --rpc-url "$RPC" "$ENTRY_POINT") != "0x" ]] || { say "EntryPoint did not land at its canonical address"; exit 1; }

run_deploy() {
  DEPLOYMENTS_FILE="$OUT" PAYMASTER_DEPOSIT=1000000000000000000 \
    "$FOUNDRY/forge-linux-amd64/bin/forge" script script/Deploy.s.sol --rpc-url "$RPC" --private-key "$KEY" --broadcast \
    --slow --non-interactive >"$WORK/forge-$1.log" 2>&1 || { cat "$WORK/forge-$1.log"; say "deploy run $1 failed"; exit 1; }
}

DEPLOYER=$("$FOUNDRY/cast-linux-amd64/bin/cast" wallet address "$KEY")
say "first deploy"
run_deploy 1
NONCE_AFTER_FIRST=$("$FOUNDRY/cast-linux-amd64/bin/cast" nonce --rpc-url "$RPC" "$DEPLOYER")
FACTORY=$(node -e "process.stdout.write(require('./$OUT').clusterFactory)")
for ADDRESS in $(node -e "const d=require('./$OUT'); for (const [k,v] of Object.entries(d)) if (k !== 'chainId') console.log(k + '=' + v)"); do
  [[ $("$FOUNDRY/cast-linux-amd64/bin/cast" code --rpc-url "$RPC" "${ADDRESS#*=}") != "0x" ]] || { say "no code at the recorded ${ADDRESS%%=*} ${ADDRESS#*=}"; exit 1; }
done
DEPLOY_BLOCK=$("$FOUNDRY/cast-linux-amd64/bin/cast" call --rpc-url "$RPC" "$FACTORY" "deployBlock()(uint256)")
[[ "$DEPLOY_BLOCK" -gt 0 ]] || { say "factory reports deploy block $DEPLOY_BLOCK"; exit 1; }
say "factory $FACTORY deployed at block $DEPLOY_BLOCK; deployer nonce $NONCE_AFTER_FIRST"

say "second deploy (must reuse everything)"
run_deploy 2
NONCE_AFTER_SECOND=$("$FOUNDRY/cast-linux-amd64/bin/cast" nonce --rpc-url "$RPC" "$DEPLOYER")
[[ "$NONCE_AFTER_FIRST" == "$NONCE_AFTER_SECOND" ]] || { say "second run sent $((NONCE_AFTER_SECOND - NONCE_AFTER_FIRST)) transactions"; exit 1; }
[[ $(node -e "process.stdout.write(require('./$OUT').clusterFactory)") == "$FACTORY" ]] || { say "factory address changed"; exit 1; }
say "ok: deployed once, second run sent no transaction, every recorded address has code"
