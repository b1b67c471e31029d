//! Bad input answered clearly: each test sends a request that is valid but for one thing and
//! checks the JSON-RPC error names that thing; and a sponsor key the paymaster does not know is
//! refused at start. Every reply is checked for even-length hex throughout (rpc_ok / rpc_err).

use alloy::primitives::Address;
use alloy::signers::local::PrivateKeySigner;
use attestmesh_bindings::ENTRY_POINT_V07;
use attestmesh_chain::dummy_signature;
use attestmesh_devnet::gas_manager::paymaster_data::PAYMASTER_DATA_LEN;
use attestmesh_devnet::gas_manager::{GasManager, GasManagerError};
use attestmesh_types::UserOperation;
use serde_json::{Value, json};

use super::{Devnet, POLICY, SECRET, alchemy_request, devnet, gas_manager_config};
use crate::bundler::{Registration, post_raw, registration, rpc_err, rpc_ok};

/// The devnet, and the registration of its account: the request every test breaks in one place.
async fn devnet_with_registration() -> (Devnet, Registration) {
    let devnet = devnet().await;
    let registration = registration(&devnet.chain, &devnet.cluster, devnet.account, "node-1").await;
    (devnet, registration)
}

/// The registration as the userOp of an ERC-7677 request (no gas fields yet).
fn erc7677_op(devnet: &Devnet, registration: &Registration) -> Value {
    json!({"sender": devnet.account, "nonce": "0x00", "callData": registration.call_data})
}

/// The error (code, message) of the registration's alchemy_requestGasAndPaymasterAndData
/// request after `break_it` changed its request object.
async fn alchemy_error_with(
    devnet: &Devnet,
    registration: &Registration,
    break_it: impl FnOnce(&mut Value),
) -> (i64, String) {
    let mut request = alchemy_request(devnet, registration, POLICY, ENTRY_POINT_V07);
    break_it(&mut request[0]);
    rpc_err(
        devnet.gas_manager.url(),
        "alchemy_requestGasAndPaymasterAndData",
        request,
    )
    .await
}

/// The happy path works, and its reply is even-length hex throughout (rpc_ok checks).
#[tokio::test(flavor = "multi_thread")]
async fn a_valid_alchemy_request_gets_the_paymaster_and_full_length_paymaster_data() {
    let (devnet, registration) = devnet_with_registration().await;

    let result = rpc_ok(
        devnet.gas_manager.url(),
        "alchemy_requestGasAndPaymasterAndData",
        alchemy_request(&devnet, &registration, POLICY, ENTRY_POINT_V07),
    )
    .await;
    assert_eq!(
        result["paymaster"],
        json!(devnet.chain.deployment().verifying_paymaster)
    );
    assert_eq!(
        result["paymasterData"].as_str().unwrap().len(),
        2 + 2 * PAYMASTER_DATA_LEN
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn truncated_json_is_a_parse_error_over_http_200() {
    let devnet = devnet().await;

    let (status, reply) = post_raw(devnet.gas_manager.url(), "{\"jsonrpc\":").await;
    assert_eq!(
        (status, reply["error"]["code"].as_i64()),
        (200, Some(-32700)),
        "{reply}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_method_is_method_not_found_naming_the_served_ones() {
    let devnet = devnet().await;

    let (code, message) = rpc_err(
        devnet.gas_manager.url(),
        "alchemy_requestPaymasterAndData",
        json!([]),
    )
    .await;
    assert_eq!(code, -32601);
    assert!(
        message.contains("alchemy_requestGasAndPaymasterAndData"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_id_not_served_is_invalid_params_naming_it() {
    let (devnet, registration) = devnet_with_registration().await;

    let (code, message) = rpc_err(
        devnet.gas_manager.url(),
        "alchemy_requestGasAndPaymasterAndData",
        alchemy_request(&devnet, &registration, "other-policy", ENTRY_POINT_V07),
    )
    .await;
    assert_eq!(code, -32602);
    assert!(
        message.contains("\"other-policy\" is not served"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_entry_point_other_than_v07_is_invalid_params_naming_it() {
    let (devnet, registration) = devnet_with_registration().await;

    let (code, message) = rpc_err(
        devnet.gas_manager.url(),
        "alchemy_requestGasAndPaymasterAndData",
        alchemy_request(&devnet, &registration, POLICY, Address::repeat_byte(0x66)),
    )
    .await;
    assert_eq!(code, -32602);
    assert!(
        message.contains("entryPoint") && message.contains("not supported"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_operation_without_call_data_is_invalid_params_naming_the_field() {
    let (devnet, registration) = devnet_with_registration().await;

    let (code, message) = alchemy_error_with(&devnet, &registration, |request| {
        request["userOperation"]
            .as_object_mut()
            .unwrap()
            .remove("callData");
    })
    .await;
    assert_eq!(code, -32602);
    assert!(
        message.contains("userOperation") && message.contains("callData"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_odd_length_dummy_signature_is_invalid_params_naming_the_field() {
    let (devnet, registration) = devnet_with_registration().await;

    let (code, message) = alchemy_error_with(&devnet, &registration, |request| {
        request["dummySignature"] = json!("0xabc");
    })
    .await;
    assert_eq!(code, -32602);
    assert!(message.contains("dummySignature"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn stub_data_for_another_chain_is_invalid_params_naming_the_chain() {
    let (devnet, registration) = devnet_with_registration().await;

    let (code, message) = rpc_err(
        devnet.gas_manager.url(),
        "pm_getPaymasterStubData",
        json!([erc7677_op(&devnet, &registration), ENTRY_POINT_V07, "0x2105", {"policyId": POLICY}]),
    )
    .await;
    assert_eq!(code, -32602);
    assert!(message.contains("chain 8453 is not served"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn stub_data_without_a_policy_id_in_the_context_is_invalid_params_naming_it() {
    let (devnet, registration) = devnet_with_registration().await;

    let (code, message) = rpc_err(
        devnet.gas_manager.url(),
        "pm_getPaymasterStubData",
        json!([
            erc7677_op(&devnet, &registration),
            ENTRY_POINT_V07,
            "0x7a69",
            {}
        ]),
    )
    .await;
    assert_eq!(code, -32602);
    assert!(
        message.contains("context") && message.contains("policyId"),
        "{message}"
    );
}

/// pm_getPaymasterData signs the paymaster's gas limits: an op without them (not taken from the
/// stub) is refused, naming the missing one.
#[tokio::test(flavor = "multi_thread")]
async fn final_data_for_an_op_without_paymaster_gas_limits_is_invalid_params_naming_them() {
    let (devnet, registration) = devnet_with_registration().await;
    let mut unsized_op: UserOperation = serde_json::from_value(json!({
        "sender": devnet.account, "nonce": "0x00", "callData": registration.call_data, "callGasLimit": "0x01",
        "verificationGasLimit": "0x01", "preVerificationGas": "0x01", "maxFeePerGas": "0x01",
        "maxPriorityFeePerGas": "0x01", "signature": dummy_signature(),
    }))
    .unwrap();
    unsized_op.paymaster = Some(devnet.chain.deployment().verifying_paymaster);

    let (code, message) = rpc_err(
        devnet.gas_manager.url(),
        "pm_getPaymasterData",
        json!([unsized_op, ENTRY_POINT_V07, "0x7a69", {"policyId": POLICY}]),
    )
    .await;
    assert_eq!(code, -32602);
    assert!(
        message.contains("paymasterVerificationGasLimit"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_body_gets_http_413_and_the_gas_manager_keeps_serving() {
    let devnet = devnet().await;
    let gm = devnet.gas_manager.url();

    let (status, _) = post_raw(gm, " ".repeat(2 << 20)).await;
    assert_eq!(status, 413);
    assert_eq!(rpc_ok(gm, "eth_chainId", json!([])).await, json!("0x7a69"));
}

/// A sponsor key that is not the paymaster's signer is refused at start (every signature would
/// fail with AA34).
#[tokio::test(flavor = "multi_thread")]
async fn a_sponsor_key_that_is_not_the_paymasters_signer_is_refused_at_start() {
    let devnet = devnet().await;
    let mut config = gas_manager_config(
        &devnet.chain,
        devnet.bundler.url(),
        &devnet.webhook.url,
        SECRET,
    );
    config.sponsor = PrivateKeySigner::random();

    let err = GasManager::spawn(config).await.unwrap_err();
    assert!(matches!(err, GasManagerError::WrongSponsor { .. }), "{err}");
}
